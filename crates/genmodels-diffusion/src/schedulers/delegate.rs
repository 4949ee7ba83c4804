//! The [`Scheduler`](super::Scheduler) methods whose bodies are the same for every scheduler of a
//! family, written once as a macro to call inside `impl Scheduler for X { ... }`.

/// Expands, inside `impl Scheduler for X`, to the trait methods that only delegate to `X`'s
/// shared state. `X` has the fields `cfg: SchedulerConfig` (the resolved config) and `state`.
///
/// - `alpha` (DDPM, DDIM; `state` an [`AlphaState`](super::alpha::AlphaState)): `kind`,
///   `config`, `timesteps`, `num_inference_steps`, `alphas_cumprod`, and `set_timesteps`,
///   `set_custom_timesteps` (integer timesteps) and `add_noise` (sqrt(abar) x0 + sqrt(1 - abar)
///   noise).
/// - `sigma` (DPM-Solver++; `state` a [`SigmaState`](super::sigma::SigmaState)): the first five
///   of `alpha`, and `sigmas`, `set_begin_index` and `get_velocity` (at the sigma `add_noise`
///   uses).
/// - `ve` (Euler, Euler ancestral, Heun: k-diffusion samplers of the variance-exploding sample
///   x0 + sigma eps): those of `sigma`, and `init_noise_sigma`, `scale_model_input` (x /
///   sqrt(sigma^2 + 1)) and `add_noise` (x0 + sigma noise).
macro_rules! shared_scheduler_methods {
    // a method of (tensor, noise, timesteps) -> tensor, forwarded to the state's method `$to`
    (@noise $name:ident($x:ident) => $to:ident) => {
        fn $name(
            &self,
            $x: &tch::Tensor,
            noise: &tch::Tensor,
            timesteps: &tch::Tensor,
        ) -> genmodels_core::Result<tch::Tensor> {
            self.state.$to($x, noise, timesteps)
        }
    };
    (@common) => {
        fn kind(&self) -> $crate::schedulers::SchedulerKind {
            self.state.who()
        }

        fn config(&self) -> &$crate::schedulers::SchedulerConfig {
            &self.cfg
        }

        fn timesteps(&self) -> &[f64] {
            &self.state.timesteps
        }

        fn num_inference_steps(&self) -> Option<usize> {
            self.state.num_inference_steps
        }

        fn alphas_cumprod(&self) -> &[f64] {
            &self.state.schedule.alphas_cumprod
        }
    };
    (alpha) => {
        shared_scheduler_methods!(@common);

        fn set_timesteps(&mut self, n: usize) -> genmodels_core::Result<()> {
            self.state.set_timesteps(&self.cfg, n)
        }

        fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> genmodels_core::Result<()> {
            self.state.set_custom_timesteps(timesteps)
        }

        shared_scheduler_methods!(@noise add_noise(x0) => add_noise);
    };
    (sigma) => {
        shared_scheduler_methods!(@common);

        fn sigmas(&self) -> Option<&[f64]> {
            Some(&self.state.sigmas)
        }

        fn set_begin_index(&mut self, begin_index: usize) -> genmodels_core::Result<()> {
            self.state.set_begin_index(begin_index)
        }

        shared_scheduler_methods!(@noise get_velocity(sample) => velocity);
    };
    (ve) => {
        shared_scheduler_methods!(sigma);

        fn init_noise_sigma(&self) -> f64 {
            self.state.ve_init_noise_sigma(self.cfg.spacing())
        }

        fn scale_model_input(
            &mut self,
            sample: &tch::Tensor,
            timestep: f64,
        ) -> genmodels_core::Result<tch::Tensor> {
            self.state.scale_model_input(sample, timestep)
        }

        shared_scheduler_methods!(@noise add_noise(x0) => ve_add_noise);
    };
}
