//! AUROC and ECE against fixtures made by the references (scripts/make_detection_fixtures.py:
//! sklearn's roc_auc_score on tied scores; Guo et al.'s 15-bin ECE).

use genmodels_metrics::detection::{auroc, calibration};

fn fixture() -> serde_json::Value {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/detection.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn auroc_equals_sklearns_on_tied_scores() {
    let f = fixture();
    for case in f["auroc"].as_array().unwrap() {
        let got = auroc(&floats(&case["positive"]), &floats(&case["negative"])).unwrap();
        let want = case["auroc"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs sklearn {want}");
    }
}

#[test]
fn ece_equals_the_reference_formula() {
    let f = &fixture()["calibration"];
    let correct: Vec<bool> = f["correct"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_bool().unwrap())
        .collect();
    let c = calibration(&floats(&f["confidence"]), &correct, 15).unwrap();
    let want = f["ece"].as_f64().unwrap();
    assert!((c.ece - want).abs() < 1e-12, "{} vs {want}", c.ece);
}
