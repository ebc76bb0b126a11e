//! One module per op: a wrapper that builds a [`Kernel`](super::op::Kernel) and a plain CPU
//! reference `run_cpu` that the op's test compares against.
pub mod matvec_q1_0;
