//! Character n-gram language model: the synthetic-data generator for text tasks (the text
//! analogue of the Gaussian and GMM image generators), and the model of the collapse
//! experiment's text part (docs/design/collapse.md part 3: held-out nats per character under replace).
//!
//! Owns: counting (context, next) pairs of a sequence of ids, interpolated absolute discounting
//! (Ney, Essen and Kneser 1994) recursively down to a uniform distribution over the vocabulary,
//! exact sampling from that distribution, its log-likelihood, and analytic FLOP counts.
//! Must not: measure energy, choose a meter, write or read files, or tokenise (the caller turns
//! text into ids in 0..vocab and wraps `fit` and `sample` in measured spans).
//!
//! The model. For a context h of k characters (k = order - 1 down to 0), with c(h, w) the count
//! of w after h, c(h) = sum_w c(h, w), N1+(h.) the number of distinct w seen after h, D the
//! discount and h' = h without its oldest character:
//! ```text
//! P(w | h) = max(c(h, w) - D, 0) / c(h) + (D * N1+(h.) / c(h)) * P(w | h')   if c(h) > 0
//! P(w | h) = P(w | h')                                                        if c(h) = 0
//! P(w | h') below the empty context = 1 / vocab
//! ```
//! Every count is at least 1 and D < 1, so the discounted mass of h is (c(h) - D N1+(h.)) / c(h)
//! and the weights of a level sum to 1. Every id of the vocabulary has probability at least
//! prod_k (D N1+ / c) / vocab > 0, so log-likelihoods are finite and support never shrinks to
//! zero under repeated refitting on samples (the collapse experiment's tails thin, not vanish).
//!
//! Counts are taken at every position i for every context length 0..=min(i, order - 1): a
//! sequence's first characters are counted (and sampled, and scored) with the contexts they
//! have, the first from the empty context. A context seen at length k implies its suffixes were
//! seen, so the longest seen suffix of a history is where sampling and scoring start.
//!
//! Deterministic: `fit` is counting and sorting (no randomness, no hash-order dependence: the
//! table is stored sorted by level, then context, then next id); `sample` draws only from the
//! seeded host RNG passed in.

use super::SynthError;
use crate::engine::model::SeededRng;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Default order (characters in an n-gram: order - 1 of context plus the predicted one).
pub const DEFAULT_ORDER: usize = 5;
/// Default absolute discount D, the common choice (Ney et al.'s count-of-counts estimate
/// n1 / (n1 + 2 n2) is 0.44 to 0.62 on the shipped Shakespeare's 2- to 6-grams).
pub const DEFAULT_DISCOUNT: f64 = 0.75;
/// Largest order `new` accepts; `fit` further needs order x bits-per-id <= 64 (order 8 for
/// vocab 256).
pub const MAX_ORDER: usize = 16;

/// Bits of a packed key that hold the context length (MAX_ORDER - 1 = 15 fits in 4).
const LEN_BITS: u32 = 4;
/// Bits of a packed key left for the context's ids.
const CTX_BITS: u32 = 64 - LEN_BITS;
/// Marks the empty context, which has no shorter parent.
const NO_PARENT: usize = usize::MAX;
/// 2^53: a uniform in [0, 1) from 53 random bits, every value exact in f64.
const TWO_53: usize = 1 << 53;

/// The model's two hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NgramOptions {
    /// Characters per n-gram, >= 1: order - 1 characters of context (1 is a unigram model).
    pub order: usize,
    /// Absolute discount D subtracted from every seen count, in (0, 1).
    pub discount: f64,
}

impl Default for NgramOptions {
    fn default() -> Self {
        Self {
            order: DEFAULT_ORDER,
            discount: DEFAULT_DISCOUNT,
        }
    }
}

/// One seen context: its counts and where its followers lie in `CharNgram::followers`.
#[derive(Debug, Clone, Copy)]
struct Context {
    /// c(h): occurrences of the context followed by any id.
    total: u64,
    /// Index of its first follower; its N1+(h.) followers are contiguous, sorted by next id.
    start: usize,
    /// N1+(h.): distinct ids seen after it.
    distinct: usize,
    /// Index of the context without its oldest id (NO_PARENT for the empty context).
    parent: usize,
}

/// One (context, next) count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Follower {
    next: u32,
    count: u32,
}

/// splitmix64's finaliser as a `Hasher`: deterministic (no per-process random seed, unlike std's
/// default) and well mixed in both the low bits (bucket) and the high bits (hashbrown's tags).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

type KeyMap = HashMap<u64, usize, BuildHasherDefault<KeyHasher>>;

/// A character n-gram model with interpolated absolute discounting (see the module header).
#[derive(Debug, Clone)]
pub struct CharNgram {
    opts: NgramOptions,
    /// Ids are in 0..vocab; 0 before `fit`.
    vocab: usize,
    /// Bits per packed id: ceil(log2 vocab), at least 1.
    bits: u32,
    /// Every seen context, by context length, then packed context.
    contexts: Vec<Context>,
    followers: Vec<Follower>,
    /// Packed key (length and ids) of a context to its index in `contexts`.
    index: KeyMap,
    /// (context, next) count updates of the last fit.
    updates: u64,
}

impl CharNgram {
    /// An unfitted model; `InvalidOption` unless 1 <= order <= MAX_ORDER and 0 < discount < 1.
    pub fn new(opts: NgramOptions) -> Result<Self, SynthError> {
        if !(1..=MAX_ORDER).contains(&opts.order) {
            return Err(SynthError::InvalidOption(format!(
                "n-gram order must be in 1..={MAX_ORDER}, got {}",
                opts.order
            )));
        }
        if !(opts.discount > 0.0 && opts.discount < 1.0) {
            return Err(SynthError::InvalidOption(format!(
                "n-gram absolute discount must be in (0, 1), got {}",
                opts.discount
            )));
        }
        Ok(Self {
            opts,
            vocab: 0,
            bits: 1,
            contexts: Vec::new(),
            followers: Vec::new(),
            index: KeyMap::default(),
            updates: 0,
        })
    }

    pub fn options(&self) -> NgramOptions {
        self.opts
    }

    /// The vocabulary size of the last fit (0 before any).
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Distinct contexts (of every length, the empty one included) seen by the last fit.
    pub fn context_count(&self) -> usize {
        self.contexts.len()
    }

    /// Counts every (context, next) pair of `ids`, for every context length 0..order, replacing
    /// any earlier fit. Errors (the model is left as it was): `InvalidOption` for vocab 0, a
    /// vocab above 2^32, or an order too long to pack for this vocab (more than 64 bits in
    /// order x ceil(log2 vocab)); `NoData` for no ids; `Malformed` for an id >= vocab (naming
    /// its position) or more than u32::MAX ids.
    pub fn fit(&mut self, ids: &[u32], vocab: usize) -> Result<(), SynthError> {
        let order = self.opts.order;
        if vocab == 0 || vocab as u64 > 1u64 << 32 {
            return Err(SynthError::InvalidOption(format!(
                "n-gram vocab must be in 1..=2^32 (ids are u32), got {vocab}"
            )));
        }
        let bits = bits_for(vocab);
        if order as u64 * u64::from(bits) > 64 {
            return Err(SynthError::InvalidOption(format!(
                "n-gram order {order} with vocab {vocab} ({bits} bits per id) does not pack \
                 into 64 bits: use order <= {}",
                64 / bits
            )));
        }
        if ids.is_empty() {
            return Err(SynthError::NoData);
        }
        if u32::try_from(ids.len()).is_err() {
            return Err(SynthError::Malformed(format!(
                "{} ids exceed the n-gram model's u32 counts",
                ids.len()
            )));
        }
        check_ids(ids, vocab, "training text")?;

        let mut contexts = Vec::new();
        let mut followers = Vec::new();
        let mut index = KeyMap::default();
        let mut updates = 0u64;
        // One reusable buffer of packed (context, next) windows, sorted per level: counting by
        // sorting is deterministic and touches memory sequentially (a hash map of 5-grams would
        // miss cache on every update).
        let mut windows: Vec<u64> = Vec::with_capacity(ids.len());
        for k in 0..order {
            windows.clear();
            let window_mask = mask(k + 1, bits);
            let mut roll = 0u64;
            for (i, &id) in ids.iter().enumerate() {
                roll = shift_in(roll, id, bits) & window_mask;
                if i >= k {
                    windows.push(roll);
                }
            }
            updates += windows.len() as u64;
            windows.sort_unstable();
            let mut i = 0;
            while i < windows.len() {
                let ctx = context_of(windows[i], bits);
                let start = followers.len();
                let mut total = 0u64;
                while i < windows.len() && context_of(windows[i], bits) == ctx {
                    let w = windows[i];
                    let mut j = i;
                    while j < windows.len() && windows[j] == w {
                        j += 1;
                    }
                    followers.push(Follower {
                        // The low `bits` bits of a window are its next id, < vocab <= 2^32.
                        next: (w & mask(1, bits)) as u32,
                        // j - i <= ids.len() <= u32::MAX, checked above.
                        count: (j - i) as u32,
                    });
                    total += (j - i) as u64;
                    i = j;
                }
                let parent = if k == 0 {
                    NO_PARENT
                } else {
                    // The suffix of a seen context was seen at the same positions, one level
                    // down, which is already indexed.
                    let suffix = key(k - 1, ctx & mask(k - 1, bits));
                    *index.get(&suffix).ok_or_else(|| {
                        SynthError::Malformed(format!(
                            "n-gram table: the suffix of a length-{k} context is missing"
                        ))
                    })?
                };
                index.insert(key(k, ctx), contexts.len());
                contexts.push(Context {
                    total,
                    start,
                    distinct: followers.len() - start,
                    parent,
                });
            }
        }
        contexts.shrink_to_fit();
        followers.shrink_to_fit();
        index.shrink_to_fit();
        *self = Self {
            opts: self.opts,
            vocab,
            bits,
            contexts,
            followers,
            index,
            updates,
        };
        Ok(())
    }

    /// `len` ids drawn from the model, the first from the empty context, each later one from the
    /// up to order - 1 ids before it; deterministic given `rng`. `NotFitted` before `fit`.
    ///
    /// Exact, without a vocab-sized vector per id: at the longest seen context h, a uniform u
    /// below the discounted mass (c(h) - D N1+(h.)) / c(h) picks the follower whose cumulative
    /// max(c - D, 0) first exceeds u c(h) (u is uniform on that mass, so no second draw is
    /// needed); otherwise a fresh uniform decides at h', and below the empty context the id is
    /// uniform over the vocabulary.
    pub fn sample(&self, len: usize, rng: &mut SeededRng) -> Result<Vec<u32>, SynthError> {
        self.check_fitted()?;
        let d = self.opts.discount;
        let hist_len = self.opts.order - 1;
        let hist_mask = mask(hist_len, self.bits);
        let mut out = Vec::with_capacity(len);
        let mut hist = 0u64;
        let mut have = 0usize;
        for _ in 0..len {
            let mut at = self.longest_seen(hist, have);
            let next = loop {
                let Some(ctx) = self.contexts.get(at) else {
                    break rng.below(self.vocab) as u32;
                };
                let u = unit_uniform(rng);
                let total = ctx.total as f64;
                let x = u * total;
                if x < total - d * ctx.distinct as f64 {
                    break self.pick_follower(ctx, x);
                }
                at = ctx.parent;
            };
            out.push(next);
            hist = shift_in(hist, next, self.bits) & hist_mask;
            have = (have + 1).min(hist_len);
        }
        Ok(out)
    }

    /// P(next | context) under the model, conditioning on the last order - 1 ids of `context`
    /// (all of them if fewer; `&[]` is the empty context). `NotFitted` before `fit`, `Malformed`
    /// for an id >= vocab.
    pub fn prob(&self, context: &[u32], next: u32) -> Result<f64, SynthError> {
        self.check_fitted()?;
        check_ids(context, self.vocab, "context")?;
        check_ids(&[next], self.vocab, "next id")?;
        let k = context.len().min(self.opts.order - 1);
        let hist = context[context.len() - k..]
            .iter()
            .fold(0u64, |h, &id| shift_in(h, id, self.bits));
        Ok(self.prob_packed(hist, k, next))
    }

    /// Mean log-likelihood per id of `ids`, in nats (<= 0; its negation is the cross-entropy in
    /// nats per character, divide by ln 2 for bits), each id conditioned on the up to
    /// order - 1 ids before it in the same sequence. `NotFitted` before `fit`, `NoData` for an
    /// empty sequence, `Malformed` for an id >= vocab.
    pub fn log_likelihood(&self, ids: &[u32]) -> Result<f64, SynthError> {
        self.check_fitted()?;
        if ids.is_empty() {
            return Err(SynthError::NoData);
        }
        check_ids(ids, self.vocab, "scored text")?;
        let hist_len = self.opts.order - 1;
        let hist_mask = mask(hist_len, self.bits);
        let mut hist = 0u64;
        let mut have = 0usize;
        let mut total = 0.0;
        for &id in ids {
            total += self.prob_packed(hist, have, id).ln();
            hist = shift_in(hist, id, self.bits) & hist_mask;
            have = (have + 1).min(hist_len);
        }
        Ok(total / ids.len() as f64)
    }

    /// Analytic FLOPs of the last fit (0 before any): one operation per (context, next) count
    /// update, i.e. order x ids fitted, less the contexts the first order - 1 positions lack.
    /// Sorting and packing are integer work and not counted.
    pub fn fit_flops(&self) -> f64 {
        self.updates as f64
    }

    /// Analytic FLOPs of sampling `n` ids, a stated per-id cost: order levels (the worst-case
    /// backoff depth) x (1 backoff test + the mean followers per context of the fitted table,
    /// scanned to pick one). 0 before `fit`.
    pub fn sample_flops(&self, n: usize) -> f64 {
        if self.contexts.is_empty() {
            return 0.0;
        }
        let mean_followers = self.followers.len() as f64 / self.contexts.len() as f64;
        n as f64 * self.opts.order as f64 * (1.0 + mean_followers)
    }

    /// Hyperparameters and table size, one line, for run records.
    pub fn describe(&self) -> String {
        let head = format!(
            "char-ngram order {}, absolute discount {}",
            self.opts.order, self.opts.discount
        );
        if self.contexts.is_empty() {
            format!("{head}, not fitted")
        } else {
            format!(
                "{head}, vocab {}, {} contexts",
                self.vocab,
                self.contexts.len()
            )
        }
    }

    fn check_fitted(&self) -> Result<(), SynthError> {
        if self.contexts.is_empty() {
            Err(SynthError::NotFitted)
        } else {
            Ok(())
        }
    }

    /// Index of the longest seen suffix of the last `have` ids of `hist` (the empty context, 0,
    /// is always seen after a fit).
    fn longest_seen(&self, hist: u64, have: usize) -> usize {
        (0..=have)
            .rev()
            .find_map(|k| self.index.get(&key(k, hist & mask(k, self.bits))).copied())
            .unwrap_or(NO_PARENT)
    }

    /// The follower of `ctx` at discounted cumulative mass `x` (0 <= x < c - D N1+).
    fn pick_follower(&self, ctx: &Context, x: f64) -> u32 {
        let fs = &self.followers[ctx.start..ctx.start + ctx.distinct];
        let d = self.opts.discount;
        let mut cum = 0.0;
        for f in fs {
            cum += f.count as f64 - d;
            if x < cum {
                return f.next;
            }
        }
        // Only rounding in `cum` can get here: x is below the exact sum.
        fs.last().map_or(0, |f| f.next)
    }

    /// P(next | the last `have` ids of `hist`): the recursion evaluated from the uniform up
    /// through every seen suffix, shortest first.
    fn prob_packed(&self, hist: u64, have: usize, next: u32) -> f64 {
        let d = self.opts.discount;
        let mut p = 1.0 / self.vocab as f64;
        for k in 0..=have {
            let Some(&at) = self.index.get(&key(k, hist & mask(k, self.bits))) else {
                // Longer contexts of an unseen one are unseen too.
                break;
            };
            let ctx = &self.contexts[at];
            let fs = &self.followers[ctx.start..ctx.start + ctx.distinct];
            let c = fs
                .binary_search_by_key(&next, |f| f.next)
                .map_or(0.0, |i| fs[i].count as f64);
            let total = ctx.total as f64;
            p = (c - d).max(0.0) / total + d * ctx.distinct as f64 / total * p;
        }
        p
    }
}

/// ceil(log2 vocab), at least 1.
fn bits_for(vocab: usize) -> u32 {
    (usize::BITS - (vocab - 1).leading_zeros()).max(1)
}

/// The low `k * bits` bits set (k ids).
fn mask(k: usize, bits: u32) -> u64 {
    let b = k as u64 * u64::from(bits);
    if b >= 64 {
        u64::MAX
    } else {
        (1u64 << b) - 1
    }
}

/// Appends `id` as the newest (lowest) id of a packed window; the caller masks the oldest off.
fn shift_in(packed: u64, id: u32, bits: u32) -> u64 {
    // bits <= 32, so the shift is in range; an order x bits = 64 window drops its top naturally.
    (packed << bits) | u64::from(id)
}

/// The context of a packed (context, next) window.
fn context_of(window: u64, bits: u32) -> u64 {
    window >> bits
}

/// The index key of a packed context of `k` ids: length in the top LEN_BITS bits. Nothing
/// collides: k < MAX_ORDER = 16, and k x bits <= 60 (order x bits <= 64 gives (order - 1) x
/// bits <= 64 - bits, which is <= 60 for bits >= 4, and 15 x 3 = 45 for smaller ids).
fn key(k: usize, packed: u64) -> u64 {
    ((k as u64) << CTX_BITS) | packed
}

/// `Malformed` naming the first id >= vocab and its position.
fn check_ids(ids: &[u32], vocab: usize, what: &str) -> Result<(), SynthError> {
    match ids.iter().position(|&id| id as usize >= vocab) {
        Some(i) => Err(SynthError::Malformed(format!(
            "{what}: id {} at position {i} is out of range for vocab {vocab}",
            ids[i]
        ))),
        None => Ok(()),
    }
}

/// A uniform in [0, 1) from 53 random bits.
fn unit_uniform(rng: &mut SeededRng) -> f64 {
    rng.below(TWO_53) as f64 / TWO_53 as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Letters are ids 0..26, space 26; ids 27..32 never occur (vocab 32).
    const SPACE: u32 = 26;
    const TOY_VOCAB: usize = 32;

    /// `n_words` words drawn (by `seed`) from one fixed 40-word dictionary of random letters
    /// (Zipf-like weights 1/rank), joined by spaces: structure an order-3 model can learn and an
    /// order-1 model cannot. Every seed draws from the same dictionary, so one seed's text is
    /// held-out text for another's.
    fn word_corpus(n_words: usize, seed: u64) -> Vec<u32> {
        let mut dict_rng = SeededRng::new(0, 0);
        let dict: Vec<Vec<u32>> = (0..40)
            .map(|_| {
                let len = 2 + dict_rng.below(6);
                (0..len).map(|_| dict_rng.below(26) as u32).collect()
            })
            .collect();
        let mut rng = SeededRng::new(seed, 1);
        let weights: Vec<f64> = (1..=dict.len()).map(|r| 1.0 / r as f64).collect();
        let sum: f64 = weights.iter().sum();
        let mut out = Vec::new();
        for _ in 0..n_words {
            let mut x = unit_uniform(&mut rng) * sum;
            let mut w = 0;
            while w + 1 < dict.len() && x >= weights[w] {
                x -= weights[w];
                w += 1;
            }
            out.extend_from_slice(&dict[w]);
            out.push(SPACE);
        }
        out
    }

    fn fitted(order: usize, ids: &[u32], vocab: usize) -> CharNgram {
        let mut m = CharNgram::new(NgramOptions {
            order,
            ..NgramOptions::default()
        })
        .unwrap();
        m.fit(ids, vocab).unwrap();
        m
    }

    fn prob_sum(m: &CharNgram, context: &[u32]) -> f64 {
        (0..m.vocab() as u32)
            .map(|w| m.prob(context, w).unwrap())
            .sum()
    }

    #[test]
    fn probabilities_sum_to_one() {
        let ids = word_corpus(2_000, 1);
        for order in [1, 2, 3, 5] {
            let m = fitted(order, &ids, TOY_VOCAB);
            let seen2 = &ids[10..12];
            let seen_then_unseen = [ids[10], 30]; // 30 never occurs
            for ctx in [
                &[][..],
                &ids[10..11],
                seen2,
                &ids[10..14],
                &ids[3..40], // longer than any order: only its tail counts
                &[30, 31][..],
                &seen_then_unseen[..],
                &[SPACE, 30, ids[10]][..],
            ] {
                let s = prob_sum(&m, ctx);
                assert!((s - 1.0).abs() < 1e-9, "order {order} context {ctx:?}: {s}");
            }
            // Never-seen ids keep positive mass.
            assert!(m.prob(&[], 31).unwrap() > 0.0);
        }
    }

    #[test]
    fn prob_is_the_recursion_by_hand() {
        // ids 0 1 0 1 0, vocab 3, order 2, D = 0.5.
        let mut m = CharNgram::new(NgramOptions {
            order: 2,
            discount: 0.5,
        })
        .unwrap();
        m.fit(&[0, 1, 0, 1, 0], 3).unwrap();
        // Empty context: c(0) = 3, c(1) = 2, c = 5, N1+ = 2, backoff weight 0.5 * 2 / 5 = 0.2.
        let p0 = |w: usize| [2.5 / 5.0, 1.5 / 5.0, 0.0][w] + 0.2 / 3.0;
        for w in 0..3 {
            assert!((m.prob(&[], w as u32).unwrap() - p0(w)).abs() < 1e-12);
            // Context [2] was never seen: all of it backs off to the empty context.
            assert!((m.prob(&[2], w as u32).unwrap() - p0(w)).abs() < 1e-12);
        }
        // Context [0]: followed by 1 twice, c = 2, N1+ = 1, backoff weight 0.5 / 2 = 0.25.
        let want = 1.5 / 2.0 + 0.25 * p0(1);
        assert!((m.prob(&[0], 1).unwrap() - want).abs() < 1e-12);
        assert!((m.prob(&[1, 0], 1).unwrap() - want).abs() < 1e-12); // order 2: only [0] counts
        assert!((m.prob(&[0], 0).unwrap() - 0.25 * p0(0)).abs() < 1e-12);
        assert_eq!(m.context_count(), 3); // [], [0], [1]
    }

    #[test]
    fn log_likelihood_is_the_mean_of_prob_over_growing_contexts() {
        let ids = word_corpus(1_000, 2);
        let m = fitted(4, &ids, TOY_VOCAB);
        let test = word_corpus(50, 3);
        let by_prob: f64 = (0..test.len())
            .map(|i| m.prob(&test[i.saturating_sub(3)..i], test[i]).unwrap().ln())
            .sum::<f64>()
            / test.len() as f64;
        let ll = m.log_likelihood(&test).unwrap();
        assert!((ll - by_prob).abs() < 1e-12, "{ll} vs {by_prob}");
    }

    #[test]
    fn unigram_samples_match_training_frequencies() {
        let ids = word_corpus(20_000, 4);
        let m = fitted(1, &ids, TOY_VOCAB);
        let n = 200_000;
        let s = m.sample(n, &mut SeededRng::new(5, 0)).unwrap();
        let mut got = vec![0usize; TOY_VOCAB];
        s.iter().for_each(|&w| got[w as usize] += 1);
        let mut train = vec![0usize; TOY_VOCAB];
        ids.iter().for_each(|&w| train[w as usize] += 1);
        // Pearson chi-square against the model's probabilities: 31 degrees of freedom, mean 31,
        // sd sqrt(62) = 7.9; a 6 sd bound.
        let chi2: f64 = (0..TOY_VOCAB)
            .map(|w| {
                let e = n as f64 * m.prob(&[], w as u32).unwrap();
                (got[w] as f64 - e).powi(2) / e
            })
            .sum();
        assert!(chi2 < 31.0 + 6.0 * 62f64.sqrt(), "chi2 {chi2}");
        // Against the raw training frequencies: the discount moves each by at most D / N
        // (~1e-5 here); a sampled frequency p has sd sqrt(p / n) <= 0.0011, 5 sd.
        for w in 0..TOY_VOCAB {
            let f_train = train[w] as f64 / ids.len() as f64;
            let f_got = got[w] as f64 / n as f64;
            assert!(
                (f_train - f_got).abs() < 0.0056,
                "id {w}: {f_train} vs {f_got}"
            );
        }
        // Unused ids keep the backoff's share, D x 27 / N x 1 / 32 = 3e-6 each: ~0.6 draws.
        assert!(got[30] < 10, "unused id sampled {} times", got[30]);
    }

    /// Bigram frequencies (a row-major vocab x vocab table, summing to 1).
    fn bigrams(ids: &[u32], vocab: usize) -> Vec<f64> {
        let mut t = vec![0.0; vocab * vocab];
        for w in ids.windows(2) {
            t[w[0] as usize * vocab + w[1] as usize] += 1.0;
        }
        let n = (ids.len() - 1) as f64;
        t.iter_mut().for_each(|x| *x /= n);
        t
    }

    #[test]
    fn order3_samples_match_training_bigrams() {
        let ids = word_corpus(20_000, 6);
        let m = fitted(3, &ids, TOY_VOCAB);
        let s = m.sample(200_000, &mut SeededRng::new(7, 0)).unwrap();
        let (bt, bs) = (bigrams(&ids, TOY_VOCAB), bigrams(&s, TOY_VOCAB));
        let tv: f64 = 0.5 * bt.iter().zip(&bs).map(|(a, b)| (a - b).abs()).sum::<f64>();
        let max = bt
            .iter()
            .zip(&bs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        // A bigram of frequency p has sampling sd sqrt(p / 200k) <= 0.0007 (p <= 0.1); samples
        // are autocorrelated, so 0.004 is ~6 sd. Smoothing moves mass of order D x distinct
        // contexts / N (a few 1e-3) onto unseen bigrams.
        assert!(max < 0.004, "max bigram difference {max}");
        assert!(tv < 0.03, "total variation {tv}");
        // An order-3 model reproduces words: nearly every sampled bigram is a training bigram.
        let unseen: f64 = bt
            .iter()
            .zip(&bs)
            .filter(|(a, _)| **a == 0.0)
            .map(|(_, b)| b)
            .sum();
        assert!(unseen < 0.01, "mass on unseen bigrams {unseen}");
    }

    #[test]
    fn held_out_likelihood_improves_with_order() {
        let train = word_corpus(10_000, 8);
        let test = word_corpus(2_000, 9);
        let ll: Vec<f64> = (1..=3)
            .map(|o| fitted(o, &train, TOY_VOCAB).log_likelihood(&test).unwrap())
            .collect();
        // Mean log-likelihood rises (nats per char fall) with each order.
        assert!(ll[0] < ll[1] && ll[1] < ll[2], "{ll:?}");
        assert!(-ll[0] < (TOY_VOCAB as f64).ln());
    }

    #[test]
    fn sampling_is_deterministic_given_the_seed() {
        let m = fitted(4, &word_corpus(2_000, 10), TOY_VOCAB);
        let a = m.sample(5_000, &mut SeededRng::new(11, 2)).unwrap();
        let b = m.sample(5_000, &mut SeededRng::new(11, 2)).unwrap();
        let c = m.sample(5_000, &mut SeededRng::new(12, 2)).unwrap();
        let d = m.sample(5_000, &mut SeededRng::new(11, 3)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert!(m.sample(0, &mut SeededRng::new(11, 2)).unwrap().is_empty());
        // Fitting is deterministic too.
        let m2 = fitted(4, &word_corpus(2_000, 10), TOY_VOCAB);
        assert_eq!(m2.sample(5_000, &mut SeededRng::new(11, 2)).unwrap(), a);
    }

    #[test]
    fn fit_and_option_errors() {
        let bad_opt = |order, discount| {
            matches!(
                CharNgram::new(NgramOptions { order, discount }),
                Err(SynthError::InvalidOption(_))
            )
        };
        assert!(bad_opt(0, 0.75));
        assert!(bad_opt(MAX_ORDER + 1, 0.75));
        for d in [0.0, 1.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(bad_opt(5, d), "discount {d}");
        }
        let mut m = CharNgram::new(NgramOptions::default()).unwrap();
        assert!(matches!(m.fit(&[], 256), Err(SynthError::NoData)));
        assert!(matches!(
            m.fit(&[1, 2], 0),
            Err(SynthError::InvalidOption(_))
        ));
        match m.fit(&[1, 2, 300, 4], 256) {
            Err(SynthError::Malformed(msg)) => {
                assert!(msg.contains("position 2") && msg.contains("300"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        // Order 9 does not pack 8-bit ids into 64 bits; order 8 does.
        let mut m9 = CharNgram::new(NgramOptions {
            order: 9,
            discount: 0.5,
        })
        .unwrap();
        let e = m9.fit(&[1, 2, 3], 256).unwrap_err().to_string();
        assert!(e.contains("order <= 8"), "{e}");
        assert!(m9.fit(&[1, 2, 3], 4).is_ok()); // 2 bits per id
        let mut m8 = CharNgram::new(NgramOptions {
            order: 8,
            discount: 0.5,
        })
        .unwrap();
        assert!(m8.fit(&[255; 20], 256).is_ok());
        // A failed fit leaves the earlier one in place.
        m.fit(&[1, 2, 3], 4).unwrap();
        let before = m.describe();
        assert!(m.fit(&[9], 4).is_err());
        assert_eq!(m.describe(), before);
        // Scoring and conditioning check ids too.
        assert!(matches!(m.prob(&[7], 1), Err(SynthError::Malformed(_))));
        assert!(matches!(m.prob(&[1], 4), Err(SynthError::Malformed(_))));
        assert!(matches!(
            m.log_likelihood(&[1, 4]),
            Err(SynthError::Malformed(_))
        ));
        assert!(matches!(m.log_likelihood(&[]), Err(SynthError::NoData)));
    }

    #[test]
    fn unfitted_model_refuses() {
        let m = CharNgram::new(NgramOptions::default()).unwrap();
        let mut rng = SeededRng::new(1, 0);
        assert!(matches!(m.sample(3, &mut rng), Err(SynthError::NotFitted)));
        assert!(matches!(m.prob(&[], 0), Err(SynthError::NotFitted)));
        assert!(matches!(m.log_likelihood(&[0]), Err(SynthError::NotFitted)));
        assert_eq!(m.fit_flops(), 0.0);
        assert_eq!(m.sample_flops(10), 0.0);
        assert_eq!(
            m.describe(),
            "char-ngram order 5, absolute discount 0.75, not fitted"
        );
    }

    #[test]
    fn refit_replaces_the_table() {
        let mut m = CharNgram::new(NgramOptions::default()).unwrap();
        m.fit(&word_corpus(500, 13), TOY_VOCAB).unwrap();
        m.fit(&[0, 1, 0, 1], 2).unwrap();
        assert_eq!(m.vocab(), 2);
        let s = m.sample(1_000, &mut SeededRng::new(1, 0)).unwrap();
        assert!(s.iter().all(|&w| w < 2));
        assert!((prob_sum(&m, &[0, 1]) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn every_byte_value_works() {
        let mut rng = SeededRng::new(14, 0);
        let mut ids: Vec<u32> = (0..=255).collect();
        ids.extend((0..50_000).map(|_| rng.below(256) as u32));
        ids.extend((0..=255).rev());
        let m = fitted(5, &ids, 256);
        for ctx in [
            &[][..],
            &[0, 255, 128, 7][..],
            &ids[100..104],
            &[255, 255, 255, 255][..],
        ] {
            assert!((prob_sum(&m, ctx) - 1.0).abs() < 1e-9, "{ctx:?}");
        }
        let s = m.sample(100_000, &mut SeededRng::new(15, 0)).unwrap();
        let mut seen = [false; 256];
        s.iter().for_each(|&w| seen[w as usize] = true);
        assert!(seen.iter().all(|&b| b), "some byte never sampled");
        let ll = m.log_likelihood(&ids[..5_000]).unwrap();
        assert!(ll.is_finite() && ll < 0.0);
        assert!(m
            .describe()
            .starts_with("char-ngram order 5, absolute discount 0.75, vocab 256, "));
    }

    #[test]
    fn flops_and_describe() {
        let ids = word_corpus(1_000, 16);
        let m = fitted(3, &ids, TOY_VOCAB);
        // Order 3: 3 updates per position, less 2 + 1 for the first two positions.
        assert_eq!(m.fit_flops(), (3 * ids.len() - 3) as f64);
        // order x (1 + mean followers per context).
        let mean_followers = m.followers.len() as f64 / m.context_count() as f64;
        assert!(mean_followers >= 1.0);
        let want = 1_000.0 * 3.0 * (1.0 + mean_followers);
        assert!((m.sample_flops(1_000) - want).abs() < 1e-9 * want);
        assert_eq!(
            m.describe(),
            format!(
                "char-ngram order 3, absolute discount 0.75, vocab 32, {} contexts",
                m.context_count()
            )
        );
    }

    #[test]
    fn austen_order5_beats_unigram_and_uniform() {
        // The shipped corpus (data/text/austen.txt), first 500 KB as bytes: 450 KB to fit,
        // 50 KB held out.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/text/austen.txt");
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let ids: Vec<u32> = bytes.iter().take(500_000).map(|&b| u32::from(b)).collect();
        let cut = ids.len() * 9 / 10;
        let (train, test) = ids.split_at(cut);
        let nats = |order| -fitted(order, train, 256).log_likelihood(test).unwrap();
        let (n1, n5) = (nats(1), nats(5));
        // A unigram model of English is ~3 nats per char (4.1 bits), order 5 under 2.
        assert!(
            n5 < n1 && n5 < 256f64.ln(),
            "order 5 {n5} nats/char, order 1 {n1}"
        );
        assert!(n5 < 2.0, "order 5 {n5}");
    }
}
