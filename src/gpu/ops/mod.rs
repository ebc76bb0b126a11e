//! One module per op: a wrapper that builds a [`Kernel`](super::kernel::Kernel) and a plain CPU
//! reference `run_cpu` that the op's test compares against.
pub mod argmax;
pub mod attention_decode;
pub mod attention_prefill;
pub mod elementwise;
pub mod embed_q1_0;
pub mod ffn_gate_up;
pub mod fused;
pub mod head_argmax;
pub mod matmul_q1_0;
pub mod matvec_q1_0;
pub mod qk_norm_rope;
pub mod qkv_rope;
pub mod rmsnorm;
pub mod sampler;
pub mod silu_mul;
pub mod topk;
pub mod wo_merge;
