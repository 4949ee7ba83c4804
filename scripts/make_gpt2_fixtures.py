"""Reference fixture for the GPT-2 import: a small randomly initialised GPT-2 made with Hugging
Face `transformers`, its logits on fixed token ids, and its greedy continuation of a prompt.

    .venv/bin/python scripts/make_gpt2_fixtures.py

writes crates/genmodels-transformer/tests/fixtures/gpt2-tiny/{config.json, model.safetensors,
expected.safetensors}. The Rust test loads the folder through our importer and must agree:
logits within 1e-4, greedy tokens identical.
"""
import pathlib

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

out = pathlib.Path(__file__).resolve().parent.parent / "crates/genmodels-transformer/tests/fixtures/gpt2-tiny"
out.mkdir(parents=True, exist_ok=True)

torch.manual_seed(0)
# A larger init than GPT-2's 0.02 spreads the logits, so greedy choices are not near-ties.
cfg = GPT2Config(vocab_size=97, n_positions=48, n_embd=32, n_layer=2, n_head=4, initializer_range=0.3,
                 bos_token_id=None, eos_token_id=None)
model = GPT2LMHeadModel(cfg).eval()
model.save_pretrained(out, safe_serialization=True)
for extra in ["generation_config.json"]:
    (out / extra).unlink(missing_ok=True)

g = torch.Generator().manual_seed(1)
ids = torch.randint(0, cfg.vocab_size, (2, 16), generator=g)
with torch.no_grad():
    logits = model(ids).logits
prompt = ids[:1, :5].clone()
with torch.no_grad():
    greedy = model.generate(prompt, max_new_tokens=30, do_sample=False, pad_token_id=0,
                            attention_mask=torch.ones_like(prompt))
    # Margin of each greedy choice over the runner-up, to show the test is not decided by noise.
    full = model(greedy).logits[0, prompt.shape[1] - 1:-1]
    top2 = full.topk(2, dim=-1).values
    print("smallest greedy margin:", (top2[:, 0] - top2[:, 1]).min().item())
save_file({"ids": ids.contiguous(), "logits": logits.contiguous(),
           "prompt": prompt.contiguous(), "greedy": greedy[:, prompt.shape[1]:].contiguous()},
          str(out / "expected.safetensors"))
print("wrote", out, [p.name for p in out.iterdir()])
