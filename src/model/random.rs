//! Seeded random weights of any shape, for `sieve bench` and sieve's own tests and benches,
//! which need a model of a real size but not its weights.

use candle_core::{DType, Device, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

/// A weight source that makes up seeded random tensors of whatever shape is asked for, for
/// benchmarks that need a model of a real size but not its weights. Layer-norm scales are ones.
pub(crate) struct RandomWeights {
    seed: u64,
}

impl RandomWeights {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// A `VarBuilder` over random weights.
    pub fn var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }
}

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        use rand::{Rng, SeedableRng};
        let is_norm = name.contains("norm") || name.contains("layrnorm");
        let n = s.elem_count();
        let data: Vec<f32> = if is_norm && name.ends_with("weight") {
            vec![1.0; n]
        } else if is_norm {
            vec![0.0; n]
        } else {
            let h = name
                .bytes()
                .fold(self.seed ^ 0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
            let mut rng = rand::rngs::StdRng::seed_from_u64(h);
            (0..n).map(|_| rng.random_range(-0.04f32..0.04)).collect()
        };
        Tensor::from_vec(data, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}
