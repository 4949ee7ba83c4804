//! Tensor operators that tch does not expose with all their arguments, bound directly to ATen
//! (csrc/ops.cpp, compiled against the same libtorch headers as tch). Each has a pure-tch
//! fallback with the same results, used when the crate was built without the headers.

use tch::Tensor;

#[cfg(genmodels_native_ops)]
mod native {
    use std::ffi::{c_char, c_void, CStr};

    extern "C" {
        pub fn genmodels_leaky_relu(x: *mut c_void, slope: f64) -> *mut c_void;
        pub fn genmodels_grad_reset(x: *mut c_void) -> bool;
        #[allow(clippy::too_many_arguments)]
        pub fn genmodels_fused_adam(
            params: *const *mut c_void,
            grads: *const *mut c_void,
            exp_avgs: *const *mut c_void,
            exp_avg_sqs: *const *mut c_void,
            steps: *const *mut c_void,
            n: i64,
            lr: f64,
            beta1: f64,
            beta2: f64,
            weight_decay: f64,
            eps: f64,
            decoupled: bool,
        ) -> bool;
        pub fn genmodels_last_error() -> *const c_char;
    }

    pub fn ptrs(ts: &[&tch::Tensor]) -> Vec<*mut c_void> {
        ts.iter().map(|t| t.as_ptr() as *mut c_void).collect()
    }

    pub fn last_error() -> String {
        // SAFETY: the C++ side returns a NUL-terminated string owned by a thread-local.
        unsafe { CStr::from_ptr(genmodels_last_error()) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Leaky ReLU with slope `slope` for negative inputs: ATen's `leaky_relu` kernel forward and
/// backward (tch's `leaky_relu` fixes the slope at 0.01).
///
/// Panics, like tch's own operators, if libtorch rejects the input.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Tensor {
    #[cfg(genmodels_native_ops)]
    {
        // SAFETY: `x.as_ptr()` points to a live `at::Tensor` for the duration of the call; the
        // C++ side only reads it and returns a new heap `at::Tensor` (or null), which
        // `Tensor::from_ptr` takes ownership of and frees with tch's own deleter.
        let out = unsafe { native::genmodels_leaky_relu(x.as_ptr() as *mut _, slope) };
        if out.is_null() {
            panic!("leaky_relu: {}", native::last_error());
        }
        unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) }
    }
    #[cfg(not(genmodels_native_ops))]
    {
        // One PReLU kernel: same values, a slower backward (it also reduces a weight gradient).
        x.prelu(&Tensor::from_slice(&[slope as f32]).to_device(x.device()))
    }
}

/// Clears the gradient of `x` (PyTorch's `zero_grad(set_to_none=True)`): the next backward pass
/// stores its gradient instead of adding it to a zeroed buffer, and an optimiser skips a
/// parameter that received none. Without the native ops the gradient is zeroed instead.
pub fn clear_grad(x: &mut Tensor) {
    #[cfg(genmodels_native_ops)]
    {
        // SAFETY: `x` is a live `at::Tensor`; the call only resets its gradient slot.
        if !unsafe { native::genmodels_grad_reset(x.as_ptr() as *mut _) } {
            panic!("clear_grad: {}", native::last_error());
        }
    }
    #[cfg(not(genmodels_native_ops))]
    x.zero_grad();
}

/// Adam's hyper-parameters as the fused kernel takes them.
#[derive(Debug, Clone, Copy)]
pub struct FusedAdamArgs {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
    /// AdamW's decoupled weight decay instead of L2 added to the gradient.
    pub decoupled: bool,
}

/// One Adam (or AdamW) update of `params` with ATen's fused kernel (`_fused_adam_`, what
/// `torch.optim.Adam(fused=True)` runs): moments, bias corrections and the parameter update in
/// one pass per tensor. `steps[i]` is a float scalar tensor holding the step count including
/// this update. All slices have the same length; parameters, gradients and moments share
/// device and dtype. Returns `false` when the native ops were not compiled in (the caller then
/// uses tensor operations); panics, like tch's operators, if libtorch rejects the input.
pub fn fused_adam(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avgs: &[&Tensor],
    exp_avg_sqs: &[&Tensor],
    steps: &[&Tensor],
    a: FusedAdamArgs,
) -> bool {
    let n = params.len();
    assert!(
        [grads.len(), exp_avgs.len(), exp_avg_sqs.len(), steps.len()]
            .iter()
            .all(|&l| l == n),
        "fused_adam: lists of different lengths"
    );
    #[cfg(genmodels_native_ops)]
    {
        use native::ptrs;
        let (p, g, m, v, s) = (
            ptrs(params),
            ptrs(grads),
            ptrs(exp_avgs),
            ptrs(exp_avg_sqs),
            ptrs(steps),
        );
        // SAFETY: every pointer is a live `at::Tensor` borrowed for the call; the C++ side
        // copies the handles (reference counts), updates params and moments in place and
        // keeps nothing.
        let ok = unsafe {
            native::genmodels_fused_adam(
                p.as_ptr(),
                g.as_ptr(),
                m.as_ptr(),
                v.as_ptr(),
                s.as_ptr(),
                n as i64,
                a.lr,
                a.beta1,
                a.beta2,
                a.weight_decay,
                a.eps,
                a.decoupled,
            )
        };
        if !ok {
            panic!("fused_adam: {}", native::last_error());
        }
        true
    }
    #[cfg(not(genmodels_native_ops))]
    {
        let _ = a;
        false
    }
}

/// The message of the last native call that failed on this thread.
#[cfg(genmodels_native_ops)]
pub(crate) fn native_last_error() -> String {
    native::last_error()
}

/// Whether the native operators were compiled in.
pub fn native_ops() -> bool {
    cfg!(genmodels_native_ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn leaky_relu_matches_its_formula_forward_and_backward() {
        let x = Tensor::from_slice(&[-2.0f32, -0.5, 0.0, 0.5, 3.0]).set_requires_grad(true);
        let y = leaky_relu(&x, 0.2);
        let want = Tensor::from_slice(&[-0.4f32, -0.1, 0.0, 0.5, 3.0]);
        assert!(y.allclose(&want, 1e-6, 1e-7, false), "{y}");
        (&y * Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0]))
            .sum(Kind::Float)
            .backward();
        // d/dx: slope below zero, 1 above (ATen's leaky_relu_backward uses x > 0).
        let g = x.grad();
        let want_g = Tensor::from_slice(&[0.2f32, 0.4, 0.6, 4.0, 5.0]);
        assert!(g.allclose(&want_g, 1e-6, 1e-7, false), "{g}");
        // Any shape and device the input has.
        let z = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu));
        let expect = z.maximum(&(&z * 0.1));
        assert!(leaky_relu(&z, 0.1).allclose(&expect, 1e-6, 1e-7, false));
    }

    #[test]
    fn the_native_op_is_built_here() {
        // The repository's own set-up always provides the headers; a build without them must
        // be a deliberate choice, not a silent slowdown.
        assert!(
            native_ops(),
            "genmodels-core was built without csrc/ops.cpp (see build.rs warnings)"
        );
    }
}
