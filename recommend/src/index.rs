//! What a customer's recommendations are read from: every item's nearest neighbours, inverted,
//! so that scoring a customer costs the neighbour entries of its own items and no more, plus
//! every item's popularity. Built from the neighbour lists the model's partitions compute; held
//! read-only while it serves.
//!
//! ```text
//! lists: j ─▶ N(j) = [(i, s(j, i))]   (candidate-side: j's own top-k decides who votes for it)
//! build: voters[i] = [(j, s(j, i)) : i ∈ N(j)]
//! recommend(history): score[j] = Σ_{i in history} w_i · s(j, i) over voters[i], j ∉ history
//!   ─▶ top `limit` (score, then name) ─▶ because: j's largest contributions
//! ```

use std::collections::HashMap;

use crate::rank::{Scored, MAX_BECAUSE};

/// A dense item number.
type Ix = u32;

/// One list per item, all in one array (8 bytes an entry: scoring a customer streams through
/// tens of thousands of them).
#[derive(Debug, Clone, Default)]
struct Lists {
    /// Where item k's list starts; it ends where k+1's starts.
    start: Vec<usize>,
    entries: Vec<(Ix, f32)>,
}

impl Lists {
    /// `lists[k]` for every item k.
    fn of(lists: Vec<Vec<(Ix, f32)>>) -> Self {
        let mut out = Lists {
            start: Vec::with_capacity(lists.len() + 1),
            entries: Vec::with_capacity(lists.iter().map(Vec::len).sum()),
        };
        for l in lists {
            out.start.push(out.entries.len());
            out.entries.extend(l);
        }
        out.start.push(out.entries.len());
        out
    }

    fn get(&self, k: Ix) -> &[(Ix, f32)] {
        let k = k as usize;
        &self.entries[self.start[k]..self.start[k + 1]]
    }
}

/// Neighbour lists and popularity, ready to score customers. Similarities are kept as `f32`
/// (seven significant digits: enough to rank by, half the memory to stream).
#[derive(Debug, Clone, Default)]
pub struct Index {
    names: Vec<String>,
    ids: HashMap<String, Ix>,
    /// N(j), best first.
    neighbours: Lists,
    /// For each item i, the candidates j whose neighbour lists hold it, with s(j, i).
    voters: Lists,
    /// (item, customers), most first, ties by name.
    popular: Vec<(Ix, u64)>,
}

/// One thread's buffers for scoring a customer: every item's score and the customer's weight of
/// it, by number. Reused (zeroed, not allocated, per request): a recommendation then allocates
/// nothing the size of the catalogue.
#[derive(Debug, Default)]
struct Scratch {
    score: Vec<f64>,
    weight: Vec<u32>,
}

impl Scratch {
    /// All zero, for an index of `n` items.
    fn clear(&mut self, n: usize) {
        self.score.clear();
        self.score.resize(n, 0.0);
        self.weight.clear();
        self.weight.resize(n, 0);
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

impl Index {
    /// An index of `lists` (each item's neighbours with their similarity, best first) and
    /// `popularity` (each item's customer count). An item named twice keeps its last list.
    pub fn build(
        lists: impl IntoIterator<Item = (String, Vec<(String, f64)>)>,
        popularity: impl IntoIterator<Item = (String, u64)>,
    ) -> Self {
        let mut ix = Index::default();
        let mut lists_ix: Vec<(Ix, Vec<(Ix, f32)>)> = Vec::new();
        for (j, list) in lists {
            let j = ix.intern(&j);
            let list = list
                .into_iter()
                .map(|(i, s)| (i, s as f32))
                .filter(|(_, s)| *s > 0.0 && s.is_finite())
                .map(|(i, s)| (ix.intern(&i), s))
                .collect();
            lists_ix.push((j, list));
        }
        let mut popular: HashMap<Ix, u64> = HashMap::new();
        for (i, c) in popularity {
            let i = ix.intern(&i);
            popular.insert(i, c);
        }
        let n = ix.names.len();
        let mut neighbours: Vec<Vec<(Ix, f32)>> = vec![Vec::new(); n];
        let mut voters: Vec<Vec<(Ix, f32)>> = vec![Vec::new(); n];
        for (j, list) in lists_ix {
            neighbours[j as usize] = list;
        }
        for (j, list) in neighbours.iter().enumerate() {
            for (i, s) in list {
                voters[*i as usize].push((j as Ix, *s));
            }
        }
        ix.neighbours = Lists::of(neighbours);
        ix.voters = Lists::of(voters);
        let mut popular: Vec<(Ix, u64)> = popular.into_iter().filter(|(_, c)| *c > 0).collect();
        popular.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| ix.names[a.0 as usize].cmp(&ix.names[b.0 as usize]))
        });
        ix.popular = popular;
        ix
    }

    fn intern(&mut self, item: &str) -> Ix {
        if let Some(i) = self.ids.get(item) {
            return *i;
        }
        let i = self.names.len() as Ix;
        self.names.push(item.to_string());
        self.ids.insert(item.to_string(), i);
        i
    }

    /// Items the index knows.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when it knows no item.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Neighbour entries held (the size of the model being served).
    pub fn entries(&self) -> usize {
        self.neighbours.entries.len()
    }

    /// The best `limit` items for a customer with `history` (item, weight), none of them in
    /// it: best first, ties by name, each with the history items that contributed most.
    pub fn recommend(&self, history: &[(&str, u32)], limit: usize) -> Vec<Scored> {
        SCRATCH.with(|scratch| self.recommend_in(&mut scratch.borrow_mut(), history, limit))
    }

    fn recommend_in(&self, s: &mut Scratch, history: &[(&str, u32)], limit: usize) -> Vec<Scored> {
        let n = self.names.len();
        s.clear(n);
        // The customer's items the index knows, in history order (so the sums are the same
        // whoever builds the history), and each item's weight by number.
        let held: Vec<(Ix, u32)> = history
            .iter()
            .filter_map(|(item, w)| self.ids.get(*item).map(|i| (*i, *w)))
            .collect();
        let (score, weight) = (&mut s.score, &mut s.weight);
        for (i, w) in &held {
            weight[*i as usize] = *w;
        }
        for (i, w) in &held {
            let w = f64::from(*w);
            for (j, sim) in self.voters.get(*i) {
                score[*j as usize] += w * f64::from(*sim);
            }
        }
        let (score, weight) = (&*score, &*weight);
        let by = |a: &Ix, b: &Ix| {
            score[*b as usize]
                .total_cmp(&score[*a as usize])
                .then_with(|| self.names[*a as usize].cmp(&self.names[*b as usize]))
        };
        // The best `limit` so far, best first: most candidates lose to the last at once.
        let mut ranked: Vec<Ix> = Vec::with_capacity(limit + 1);
        if limit == 0 {
            return Vec::new();
        }
        for j in 0..n as Ix {
            if score[j as usize] <= 0.0 || weight[j as usize] > 0 {
                continue;
            }
            if ranked.len() == limit {
                match ranked.last() {
                    Some(worst) if by(&j, worst).is_lt() => {
                        ranked.pop();
                    }
                    _ => continue,
                }
            }
            let at = ranked.partition_point(|r| by(r, &j).is_lt());
            ranked.insert(at, j);
        }
        ranked
            .into_iter()
            .map(|j| Scored {
                item: self.names[j as usize].clone(),
                score: score[j as usize],
                because: self.because(j, weight),
            })
            .collect()
    }

    /// The held items (weights by number) that gave candidate `j` most, largest first, ties by
    /// name, at most [`MAX_BECAUSE`].
    fn because(&self, j: Ix, weight: &[u32]) -> Vec<String> {
        let mut parts: Vec<(Ix, f64)> = self
            .neighbours
            .get(j)
            .iter()
            .filter(|(i, _)| weight[*i as usize] > 0)
            .map(|(i, s)| (*i, f64::from(weight[*i as usize]) * f64::from(*s)))
            .collect();
        let by = |a: &(Ix, f64), b: &(Ix, f64)| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.names[a.0 as usize].cmp(&self.names[b.0 as usize]))
        };
        if parts.len() > MAX_BECAUSE {
            parts.select_nth_unstable_by(MAX_BECAUSE - 1, by);
            parts.truncate(MAX_BECAUSE);
        }
        parts.sort_by(by);
        parts
            .into_iter()
            .map(|(i, _)| self.names[i as usize].clone())
            .collect()
    }

    /// The `limit` most popular items `skip` does not leave out, with their customer counts.
    pub fn popular(&self, limit: usize, skip: impl Fn(&str) -> bool) -> Vec<(String, u64)> {
        self.popular
            .iter()
            .map(|(i, c)| (self.names[*i as usize].as_str(), *c))
            .filter(|(i, _)| !skip(i))
            .take(limit)
            .map(|(i, c)| (i.to_string(), c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(l: &[(&str, &[(&str, f64)])]) -> Vec<(String, Vec<(String, f64)>)> {
        l.iter()
            .map(|(j, n)| {
                (
                    j.to_string(),
                    n.iter().map(|(i, s)| (i.to_string(), *s)).collect(),
                )
            })
            .collect()
    }

    fn history<'a>(h: &[(&'a str, u32)]) -> Vec<(&'a str, u32)> {
        h.to_vec()
    }

    #[test]
    fn candidates_add_up_history_weights_times_similarity() {
        let ix = Index::build(
            lists(&[
                ("x", &[("a", 0.5)]),
                ("y", &[("a", 0.125), ("b", 0.75)]),
                ("z", &[("q", 0.9)]),
                ("a", &[("x", 0.5)]),
            ]),
            [],
        );
        let top = ix.recommend(&history(&[("a", 2), ("b", 1)]), 10);
        let items: Vec<&str> = top.iter().map(|r| r.item.as_str()).collect();
        // x: 2*0.5 = 1.0; y: 2*0.125 + 0.75 = 1.0 -> tie broken by name; z: q is not held; a is.
        assert_eq!(items, ["x", "y"]);
        assert!((top[1].score - 1.0).abs() < 1e-12);
        assert_eq!(top[1].because, ["b", "a"], "b gave 0.75, a 0.25");
        assert_eq!(top[0].because, ["a"]);
        assert_eq!(ix.recommend(&history(&[("a", 2), ("b", 1)]), 1).len(), 1);
        assert!(ix.recommend(&history(&[("a", 2)]), 0).is_empty());
        assert!(ix.recommend(&history(&[("nothing", 2)]), 5).is_empty());
        assert_eq!(ix.len(), 6, "x a y b z q");
        assert_eq!(ix.entries(), 5);
    }

    #[test]
    fn scoring_one_customer_leaves_nothing_behind_for_the_next() {
        let big = Index::build(
            lists(&[
                ("x", &[("a", 0.5), ("c", 0.25)]),
                ("y", &[("a", 0.125), ("b", 0.75)]),
                ("z", &[("c", 0.9)]),
                ("a", &[("x", 0.5)]),
            ]),
            [],
        );
        let small = Index::build(lists(&[("b", &[("a", 0.5)])]), []);
        let fresh = |ix: Index, h: Vec<(&'static str, u32)>| {
            std::thread::spawn(move || ix.recommend(&h, 10))
                .join()
                .unwrap()
        };
        let h1 = history(&[("a", 2), ("b", 1)]);
        let h2 = history(&[("c", 3), ("x", 1)]);
        let first = big.recommend(&h1, 10);
        let second = big.recommend(&h2, 10);
        // A smaller index between two uses of a larger one on the same thread.
        let other = small.recommend(&history(&[("a", 1)]), 10);
        assert_eq!(big.recommend(&h1, 10), first);
        assert_eq!(first, fresh(big.clone(), h1));
        assert_eq!(second, fresh(big.clone(), h2));
        assert_eq!(other, fresh(small, history(&[("a", 1)])));
        let items: Vec<&str> = second.iter().map(|r| r.item.as_str()).collect();
        assert_eq!(
            items,
            ["z", "a"],
            "x is held, so scores nothing and is not offered"
        );
    }

    #[test]
    fn the_best_few_are_the_head_of_the_whole_ranking() {
        // 60 items, each listing 12 others with similarities that often tie.
        let names: Vec<String> = (0..60).map(|k| format!("i{k:02}")).collect();
        let owned: Vec<(String, Vec<(String, f64)>)> = (0..60usize)
            .map(|j| {
                let list = (1..=12usize)
                    .map(|d| {
                        (
                            names[(j * 7 + d * 5) % 60].clone(),
                            ((j + d) % 4 + 1) as f64 / 8.0,
                        )
                    })
                    .filter(|(i, _)| *i != names[j])
                    .collect();
                (names[j].clone(), list)
            })
            .collect();
        let ix = Index::build(owned, []);
        let h = history(&[("i03", 2), ("i10", 1), ("i41", 4), ("i59", 1)]);
        let all = ix.recommend(&h, 1_000);
        assert!(all.len() > 20, "{}", all.len());
        for w in all.windows(2) {
            assert!(
                w[0].score > w[1].score || (w[0].score == w[1].score && w[0].item < w[1].item),
                "{w:?}"
            );
        }
        for k in 1..all.len() {
            assert_eq!(ix.recommend(&h, k), all[..k].to_vec(), "limit {k}");
        }
    }

    #[test]
    fn only_a_candidates_own_neighbours_vote_for_it() {
        // a lists x as its neighbour, but x's own list does not hold a: a's history says
        // nothing for x (candidate-side kNN).
        let ix = Index::build(lists(&[("a", &[("x", 0.9)]), ("x", &[("b", 0.2)])]), []);
        assert!(ix.recommend(&history(&[("a", 1)]), 5).is_empty());
        let got = ix.recommend(&history(&[("b", 3)]), 5);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].item, "x");
        assert!((got[0].score - 0.6).abs() < 1e-6);
    }

    #[test]
    fn because_names_the_three_largest_contributions() {
        let ix = Index::build(
            lists(&[(
                "x",
                &[("a", 0.1), ("b", 0.2), ("c", 0.3), ("d", 0.4), ("e", 0.5)],
            )]),
            [],
        );
        let got = ix.recommend(
            &history(&[("a", 8), ("b", 1), ("c", 1), ("d", 1), ("e", 1)]),
            3,
        );
        // a: 0.8, e: 0.5, d: 0.4, c: 0.3, b: 0.2.
        assert_eq!(got[0].because, ["a", "e", "d"]);
        assert!((got[0].score - 2.2).abs() < 1e-6);
    }

    #[test]
    fn popular_items_most_first_ties_by_name_without_the_skipped() {
        let ix = Index::build(
            [],
            [
                ("b".to_string(), 5),
                ("a".to_string(), 5),
                ("c".to_string(), 9),
                ("z".to_string(), 0),
            ],
        );
        let got = ix.popular(10, |i| i == "a");
        assert_eq!(got, [("c".to_string(), 9), ("b".to_string(), 5)]);
        assert_eq!(ix.popular(1, |_| false), [("c".to_string(), 9)]);
    }

    #[test]
    fn bad_similarities_are_dropped() {
        let ix = Index::build(
            lists(&[("x", &[("a", f64::NAN), ("b", -1.0), ("c", f64::INFINITY)])]),
            [],
        );
        assert_eq!(ix.entries(), 0);
        assert!(ix
            .recommend(&history(&[("a", 1), ("b", 1), ("c", 1)]), 5)
            .is_empty());
    }
}
