//! Sampler tests: draw statistics against softmax, what each filter keeps, penalties, seeding,
//! and that reading back only `K` candidates gives the same distribution as the full logits.

use bonsai_wgpu::sampler::{CandidateRequest, Pcg32, Sampler, SamplerConfig};

/// Draws per statistics test. The standard error of a frequency is at most
/// sqrt(0.25 / DRAWS) ~= 0.0011, so FREQ_TOL is more than 4 standard errors.
const DRAWS: usize = 200_000;
/// Largest allowed |observed frequency - expected probability| for any token.
const FREQ_TOL: f64 = 0.005;
/// Distributions computed two ways in f64 from the same f32 logits agree to rounding.
const PROB_TOL: f64 = 1e-12;

fn plain(temperature: f32) -> SamplerConfig {
    SamplerConfig {
        temperature,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        ..SamplerConfig::default()
    }
}

fn candidates(logits: &[f32]) -> Vec<(u32, f32)> {
    logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect()
}

fn softmax(logits: &[f32], t: f64) -> Vec<f64> {
    let max = logits.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
    let e: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / t).exp())
        .collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn frequencies(sampler: &mut Sampler, logits: &[f32]) -> Vec<f64> {
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..DRAWS {
        counts[sampler.sample(candidates(logits)).unwrap() as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / DRAWS as f64).collect()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "token {i}: got {g}, want {w} (tol {tol})"
        );
    }
}

#[test]
fn pcg32_matches_reference_outputs() {
    // pcg32-demo (O'Neill's reference C code) with pcg32_srandom_r(&rng, 42, 54).
    let mut rng = Pcg32::new(42, 54);
    let got: Vec<u32> = (0..6).map(|_| rng.next_u32()).collect();
    assert_eq!(
        got,
        [
            0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e
        ]
    );
}

#[test]
fn frequencies_match_softmax_with_temperature() {
    let logits = [1.0, 2.5, 0.3, -1.0, 2.0, 0.0, 1.7, -0.5];
    let mut sampler = Sampler::new(SamplerConfig {
        seed: 7,
        ..plain(0.7)
    });
    let freq = frequencies(&mut sampler, &logits);
    assert_close(&freq, &softmax(&logits, 0.7), FREQ_TOL);
}

#[test]
fn frequencies_match_renormalised_top_k() {
    let logits = [1.0, 2.5, 0.3, -1.0, 2.0, 0.0, 1.7, -0.5];
    let mut sampler = Sampler::new(SamplerConfig {
        top_k: 3,
        seed: 11,
        ..plain(1.0)
    });
    let freq = frequencies(&mut sampler, &logits);
    // Top 3 are ids 1, 4, 6.
    let kept = [2.5f32, 2.0, 1.7];
    let p = softmax(&kept, 1.0);
    let mut want = vec![0.0; logits.len()];
    want[1] = p[0];
    want[4] = p[1];
    want[6] = p[2];
    assert_close(&freq, &want, FREQ_TOL);
}

#[test]
fn top_k_keeps_exactly_the_k_largest() {
    let logits = [0.1, 5.0, 3.0, 4.0, -2.0, 4.5];
    let s = Sampler::new(SamplerConfig {
        top_k: 3,
        ..plain(1.0)
    });
    let ids: Vec<u32> = s
        .distribution(candidates(&logits))
        .unwrap()
        .iter()
        .map(|d| d.0)
        .collect();
    assert_eq!(ids, [1, 5, 3]);
}

/// Logits whose softmax is exactly [0.5, 0.3, 0.15, 0.05].
fn four_probs() -> Vec<f32> {
    [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect()
}

#[test]
fn top_p_keeps_smallest_prefix_reaching_p() {
    for (top_p, n) in [(0.45, 1), (0.75, 2), (0.9, 3), (0.99, 4)] {
        let s = Sampler::new(SamplerConfig {
            top_p,
            ..plain(1.0)
        });
        let d = s.distribution(candidates(&four_probs())).unwrap();
        assert_eq!(d.len(), n, "top_p {top_p}");
        let total: f64 = d.iter().map(|x| x.1).sum();
        assert!((total - 1.0).abs() < PROB_TOL);
    }
}

#[test]
fn min_p_drops_tokens_below_fraction_of_best() {
    for (min_p, n) in [(0.2, 3), (0.5, 2), (0.9, 1), (0.05, 4)] {
        let s = Sampler::new(SamplerConfig {
            min_p,
            ..plain(1.0)
        });
        let d = s.distribution(candidates(&four_probs())).unwrap();
        assert_eq!(d.len(), n, "min_p {min_p}");
    }
}

#[test]
fn filters_never_draw_excluded_tokens() {
    let logits = four_probs();
    let mut s = Sampler::new(SamplerConfig {
        top_p: 0.75,
        seed: 3,
        ..plain(1.0)
    });
    let freq = frequencies(&mut s, &logits);
    assert_eq!(freq[2], 0.0);
    assert_eq!(freq[3], 0.0);
    assert_close(&freq, &[0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0], FREQ_TOL);
}

#[test]
fn penalties_follow_llama_cpp() {
    let mut s = Sampler::new(SamplerConfig {
        repeat_penalty: 2.0,
        presence_penalty: 0.5,
        frequency_penalty: 0.25,
        ..plain(1.0)
    });
    for id in [1, 2, 2, 3] {
        s.accept(id);
    }
    let mut c = candidates(&[4.0, 4.0, -4.0, 3.0]);
    s.apply_penalties(&mut c);
    // id 0 unseen; id 1 once: 4/2 - 0.25 - 0.5; id 2 twice: -4*2 - 0.5 - 0.5; id 3: 3/2 - 0.75.
    let want = [4.0, 1.25, -9.0, 0.75];
    for (got, want) in c.iter().zip(want) {
        assert!(
            (got.1 - want).abs() < 1e-6,
            "id {}: got {}, want {want}",
            got.0,
            got.1
        );
    }
}

#[test]
fn penalty_window_forgets_old_tokens() {
    let mut s = Sampler::new(SamplerConfig {
        repeat_penalty: 2.0,
        penalty_last_n: 2,
        ..plain(1.0)
    });
    for id in [0, 1, 2] {
        s.accept(id);
    }
    let mut c = candidates(&[2.0, 2.0, 2.0]);
    s.apply_penalties(&mut c);
    assert_eq!(c.iter().map(|x| x.1).collect::<Vec<_>>(), [2.0, 1.0, 1.0]);
}

#[test]
fn greedy_takes_argmax_after_penalties() {
    let mut s = Sampler::new(SamplerConfig {
        repeat_penalty: 3.0,
        ..SamplerConfig::greedy()
    });
    assert_eq!(s.sample(candidates(&[1.0, 2.0, 1.5])).unwrap(), 1);
    s.accept(1);
    assert_eq!(s.sample(candidates(&[1.0, 2.0, 1.5])).unwrap(), 2);
}

#[test]
fn same_seed_same_tokens_different_seed_different_tokens() {
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
    let run = |seed| {
        let mut s = Sampler::new(SamplerConfig { seed, ..plain(1.0) });
        (0..500)
            .map(|_| s.sample(candidates(&logits)).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1234), run(1234));
    assert_ne!(run(1234), run(4321));
}

#[test]
fn request_asks_for_as_little_as_is_exact() {
    let n_vocab = 1000;
    assert_eq!(
        Sampler::new(SamplerConfig::greedy()).request(n_vocab),
        CandidateRequest::Greedy
    );
    let s = Sampler::new(SamplerConfig::default());
    assert_eq!(s.request(n_vocab), CandidateRequest::TopK(40));
    let s = Sampler::new(SamplerConfig {
        top_k: 0,
        ..SamplerConfig::default()
    });
    assert_eq!(s.request(n_vocab), CandidateRequest::Full);
    let mut s = Sampler::new(SamplerConfig {
        repeat_penalty: 1.1,
        ..SamplerConfig::default()
    });
    for id in [5, 6, 5, 7] {
        s.accept(id);
    }
    assert_eq!(s.request(n_vocab), CandidateRequest::TopK(43));
    let s = Sampler::new(SamplerConfig {
        presence_penalty: -0.5,
        ..SamplerConfig::default()
    });
    assert_eq!(s.request(n_vocab), CandidateRequest::Full);
}

/// The module-level claim: with penalties that only lower logits, the top `K` read back gives
/// the very distribution the full logits give, even when the penalised tokens are the best ones.
#[test]
fn top_k_read_back_is_exact_under_penalties() {
    let mut rng = Pcg32::new(99, 1);
    let n_vocab = 2000;
    for trial in 0..50 {
        let logits: Vec<f32> = (0..n_vocab)
            .map(|_| (rng.next_f64() * 8.0 - 4.0) as f32)
            .collect();
        let mut order: Vec<u32> = (0..n_vocab as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        let mut s = Sampler::new(SamplerConfig {
            top_k: 20,
            top_p: 0.9,
            min_p: 0.02,
            repeat_penalty: 1.5 + trial as f32 * 0.1,
            frequency_penalty: 0.3,
            presence_penalty: 0.2,
            ..SamplerConfig::default()
        });
        // Penalise the current best tokens, the worst case for a top-K cut.
        for &id in order.iter().take(30) {
            s.accept(id);
        }
        let CandidateRequest::TopK(k) = s.request(n_vocab) else {
            panic!("expected a top-K request");
        };
        let cut: Vec<(u32, f32)> = order[..k]
            .iter()
            .map(|&id| (id, logits[id as usize]))
            .collect();
        let from_cut = s.distribution(cut).unwrap();
        let from_full = s.distribution(candidates(&logits)).unwrap();
        assert_eq!(from_cut.len(), from_full.len(), "trial {trial}");
        for (a, b) in from_cut.iter().zip(&from_full) {
            assert_eq!(a.0, b.0, "trial {trial}");
            assert!(
                (a.1 - b.1).abs() < PROB_TOL,
                "trial {trial}: {} vs {}",
                a.1,
                b.1
            );
        }
    }
}

#[test]
fn all_minus_infinity_logits_do_not_produce_nan() {
    let mut s = Sampler::new(plain(1.0));
    let d = s.distribution(candidates(&[f32::NEG_INFINITY; 3])).unwrap();
    assert!(
        d.iter().all(|x| (x.1 - 1.0 / 3.0).abs() < PROB_TOL),
        "{d:?}"
    );
    assert!(s.sample(candidates(&[f32::NEG_INFINITY; 3])).unwrap() < 3);
    assert!(s.sample(candidates(&[f32::NAN])).is_err());
}
