//! The tensors of a Qwen3 GGUF: their names, shapes and roles written once ([`Weights::build`]),
//! and the one loop that loads them ([`Weights::load`]), generic over where each tensor goes.
//!
//! [`Weights`] is generic over what a tensor becomes: a [`TensorSpec`] (the table the config
//! check and the synthetic models use), the CPU reference's quantized rows and f32 norms, or
//! the GPU's repacked weights and norm buffers. A [`Placement`] says where tensors go; the
//! loop reads each tensor from the file, dequantizes norms to f32 and hands both over.

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, Gguf};
use crate::model::config::Qwen3Config;
use crate::quant::dequantize_row;

/// What a tensor is for, which fixes the types the file may store it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorRole {
    /// A linear weight `[k, n]` (n rows of k): Q1_0.
    Matrix,
    /// A norm weight: F32, F16 or BF16, read as f32.
    Norm,
}

impl TensorRole {
    /// The GGML types a file may store a tensor of this role in.
    pub fn types(self) -> &'static [GgmlType] {
        match self {
            TensorRole::Matrix => &[GgmlType::Q1_0],
            TensorRole::Norm => &[GgmlType::F32, GgmlType::F16, GgmlType::BF16],
        }
    }
}

/// One tensor the forward pass reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name in the GGUF file (`blk.0.attn_q.weight` ...).
    pub name: String,
    /// Dimensions, input width (ne0) first: `[k, n]` for a matrix, `[n]` for a norm.
    pub dims: Vec<usize>,
    /// Matrix or norm.
    pub role: TensorRole,
}

/// One transformer block's tensors. Shapes in llama2.c order (rows, columns).
#[derive(Clone, Debug)]
pub struct LayerWeights<M, V> {
    /// RMSNorm weight applied before attention: (n_embd).
    pub attn_norm: V,
    /// Query projection: (n_head * head_dim, n_embd).
    pub wq: M,
    /// Key projection: (n_head_kv * head_dim, n_embd).
    pub wk: M,
    /// Value projection: (n_head_kv * head_dim, n_embd).
    pub wv: M,
    /// Per-head RMSNorm weight on queries (Qwen3 QK-norm), shared by all heads: (head_dim).
    pub attn_q_norm: V,
    /// Per-head RMSNorm weight on keys (Qwen3 QK-norm), shared by all heads: (head_dim).
    pub attn_k_norm: V,
    /// Attention output projection: (n_embd, n_head * head_dim).
    pub wo: M,
    /// RMSNorm weight applied before the feed-forward block: (n_embd).
    pub ffn_norm: V,
    /// SwiGLU gate projection: (n_ff, n_embd).
    pub w_gate: M,
    /// SwiGLU up projection: (n_ff, n_embd).
    pub w_up: M,
    /// SwiGLU down projection: (n_embd, n_ff).
    pub w_down: M,
}

/// Every tensor of a Qwen3 model; `M` is what a linear weight becomes, `V` a norm.
#[derive(Clone, Debug)]
pub struct Weights<M, V> {
    /// Token embedding table, one row per token: (n_vocab, n_embd).
    pub token_embd: M,
    /// The transformer blocks, in order (`n_layer` of them).
    pub layers: Vec<LayerWeights<M, V>>,
    /// Final RMSNorm weight: (n_embd).
    pub output_norm: V,
    /// LM head projecting to logits: (n_vocab, n_embd); `None` when tied to `token_embd`.
    pub output: Option<M>,
}

/// Makes each tensor of [`Weights::build`] from its name and shape.
pub trait TensorSink {
    /// What a linear weight becomes.
    type Matrix;
    /// What a norm weight becomes.
    type Vector;
    /// The linear weight `name`, `[k, n]`: n rows of k.
    fn matrix(&mut self, name: &str, k: usize, n: usize) -> Result<Self::Matrix>;
    /// The norm weight `name` of `n` values.
    fn norm(&mut self, name: &str, n: usize) -> Result<Self::Vector>;
}

impl<M, V> Weights<M, V> {
    /// The tensor table: every tensor of a model shaped like `c`, in Bonsai's file order, made
    /// by `sink`. The only place tensor names and shapes are written.
    pub fn build<S>(c: &Qwen3Config, sink: &mut S) -> Result<Self>
    where
        S: TensorSink<Matrix = M, Vector = V>,
    {
        let (d, q, kv, ff, hd, nv) = (
            c.n_embd,
            c.q_dim(),
            c.kv_dim(),
            c.n_ff,
            c.head_dim,
            c.n_vocab,
        );
        let token_embd = sink.matrix("token_embd.weight", d, nv)?;
        let mut layers = Vec::with_capacity(c.n_layer);
        for l in 0..c.n_layer {
            let t = |name: &str| format!("blk.{l}.{name}.weight");
            layers.push(LayerWeights {
                attn_norm: sink.norm(&t("attn_norm"), d)?,
                wq: sink.matrix(&t("attn_q"), d, q)?,
                wk: sink.matrix(&t("attn_k"), d, kv)?,
                wv: sink.matrix(&t("attn_v"), d, kv)?,
                attn_q_norm: sink.norm(&t("attn_q_norm"), hd)?,
                attn_k_norm: sink.norm(&t("attn_k_norm"), hd)?,
                wo: sink.matrix(&t("attn_output"), q, d)?,
                ffn_norm: sink.norm(&t("ffn_norm"), d)?,
                w_gate: sink.matrix(&t("ffn_gate"), d, ff)?,
                w_up: sink.matrix(&t("ffn_up"), d, ff)?,
                w_down: sink.matrix(&t("ffn_down"), ff, d)?,
            });
        }
        let output_norm = sink.norm("output_norm.weight", d)?;
        let output = match c.tied_head {
            true => None,
            false => Some(sink.matrix("output.weight", d, nv)?),
        };
        Ok(Weights {
            token_embd,
            layers,
            output_norm,
            output,
        })
    }

    /// Checks `gguf` against the table ([`Qwen3Config::validate_tensors`]), then reads every
    /// tensor and hands it to `place`: the one load loop of the CPU and GPU engines.
    pub fn load<P>(gguf: &Gguf, c: &Qwen3Config, place: P) -> Result<Self>
    where
        P: Placement<Matrix = M, Vector = V>,
    {
        c.validate_tensors(gguf)?;
        Self::build(c, &mut FromGguf { gguf, place })
    }

    /// The LM head: `output`, or `token_embd` when tied.
    pub fn head(&self) -> &M {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }

    /// Every linear weight, layers first, then `token_embd` and `output`.
    pub fn matrices(&self) -> impl Iterator<Item = &M> {
        self.layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down])
            .chain(std::iter::once(&self.token_embd))
            .chain(self.output.as_ref())
    }

    /// Every norm weight, layers first, then `output_norm`.
    pub fn norms(&self) -> impl Iterator<Item = &V> {
        self.layers
            .iter()
            .flat_map(|l| [&l.attn_norm, &l.attn_q_norm, &l.attn_k_norm, &l.ffn_norm])
            .chain(std::iter::once(&self.output_norm))
    }
}

/// Where loaded tensors go: the CPU keeps the quantized bytes, the GPU repacks and uploads them.
pub trait Placement {
    /// What a linear weight becomes.
    type Matrix;
    /// What a norm weight becomes.
    type Vector;
    /// The Q1_0 bytes of the linear weight `name`, `[k, n]` (checked against the table).
    fn matrix(&mut self, name: &str, bytes: &[u8], k: usize, n: usize) -> Result<Self::Matrix>;
    /// The norm weight `name`, already dequantized to f32.
    fn norm(&mut self, name: &str, values: Vec<f32>) -> Result<Self::Vector>;
}

/// Reads tensors from a GGUF file for a [`Placement`].
struct FromGguf<'g, P> {
    gguf: &'g Gguf,
    place: P,
}

impl<P: Placement> TensorSink for FromGguf<'_, P> {
    type Matrix = P::Matrix;
    type Vector = P::Vector;

    fn matrix(&mut self, name: &str, k: usize, n: usize) -> Result<P::Matrix> {
        let bytes = self.gguf.tensor_data(name)?;
        self.place.matrix(name, bytes, k, n)
    }

    fn norm(&mut self, name: &str, n: usize) -> Result<P::Vector> {
        let info = self
            .gguf
            .tensor_info(name)
            .ok_or_else(|| Error::MissingTensor(name.into()))?;
        let mut values = vec![0.0f32; n];
        dequantize_row(info.ggml_type, self.gguf.tensor_data(name)?, &mut values)?;
        self.place.norm(name, values)
    }
}

/// Collects the table in file order.
struct TableSink(Vec<TensorSpec>);

impl TensorSink for TableSink {
    type Matrix = ();
    type Vector = ();

    fn matrix(&mut self, name: &str, k: usize, n: usize) -> Result<()> {
        self.0.push(TensorSpec {
            name: name.to_string(),
            dims: vec![k, n],
            role: TensorRole::Matrix,
        });
        Ok(())
    }

    fn norm(&mut self, name: &str, n: usize) -> Result<()> {
        self.0.push(TensorSpec {
            name: name.to_string(),
            dims: vec![n],
            role: TensorRole::Norm,
        });
        Ok(())
    }
}

/// Every tensor a model shaped like `c` has, in Bonsai's file order.
pub fn tensor_table(c: &Qwen3Config) -> Vec<TensorSpec> {
    let mut sink = TableSink(Vec::new());
    // TableSink never fails.
    let _ = Weights::build(c, &mut sink);
    sink.0
}
