//! EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): the item-to-item weights that best
//! rebuild each customer's weights from its other items, in closed form from the same counts the
//! partitions keep (they are the Gram matrix of the customer-item weights):
//!
//! ```text
//! G[i][j] = C[i][j] (i ≠ j),  G[i][i] = norm[i]      (Counts, maintained one delta at a time)
//! P = (G + λI)⁻¹  ─▶  B[i][j] = −P[i][j] / P[j][j]  (B[j][j] = 0)
//! candidate j's list: the `neighbours` largest positive B[i][j]; score[j] = Σ_i w_i · B[i][j]
//! ```
//!
//! The counts are updated incrementally and exactly; the solve is a batch step over them (dense,
//! about n³/2 multiply-adds and 2n² floats for n items), so it is used up to [`MAX_EASE_ITEMS`]
//! items; past that the item-kNN lists serve. Items are ordered by name, so the same counts give
//! the same lists wherever they are solved.

use std::collections::HashMap;

/// Most items solved densely (two n×n matrices of f64: 144 MB at 3,000 items, a few seconds).
pub const MAX_EASE_ITEMS: usize = 3_000;

/// The regularisation the cluster serves with: measured on MovieLens-100k's random splits
/// (README, Recommendations).
pub const LAMBDA: f64 = 300.0;

/// Neighbours kept per candidate: half of item-kNN's, since EASE gives almost every pair a
/// weight (200 cost a fifth more per recommendation for 0.003 of recall on MovieLens).
pub const NEIGHBOURS: usize = 100;

/// One candidate's list: its voters with their weights, best first.
pub type List = (String, Vec<(String, f64)>);

/// Why the weights could not be solved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EaseError {
    /// More items than a dense solve should take.
    #[error("{items} items: more than the {MAX_EASE_ITEMS} EASE solves")]
    TooManyItems {
        /// Items counted.
        items: usize,
    },
    /// λ must be positive (it keeps the matrix invertible).
    #[error("lambda must be positive and finite, not {0}")]
    BadLambda(f64),
    /// The counts were not a Gram matrix (a row names an item with no norm, or they are not
    /// positive definite).
    #[error("counts inconsistent: {0}")]
    Inconsistent(String),
}

/// Each candidate's list `(j, [(i, B[i][j])])`, best first, from every row `(i, [(j, C[i][j])])`
/// and every item's `(i, norm[i])`; items with a zero norm are left out.
pub fn solve<'a, R>(
    rows: impl IntoIterator<Item = (&'a str, R)>,
    norms: impl IntoIterator<Item = (&'a str, u64)>,
    lambda: f64,
    neighbours: usize,
) -> Result<Vec<List>, EaseError>
where
    R: IntoIterator<Item = (&'a str, u64)>,
{
    if !(lambda > 0.0 && lambda.is_finite()) {
        return Err(EaseError::BadLambda(lambda));
    }
    let mut items: Vec<(&str, u64)> = norms.into_iter().filter(|(_, n)| *n > 0).collect();
    items.sort();
    items.dedup_by(|a, b| a.0 == b.0);
    let n = items.len();
    if n > MAX_EASE_ITEMS {
        return Err(EaseError::TooManyItems { items: n });
    }
    let ix: HashMap<&str, usize> = items
        .iter()
        .enumerate()
        .map(|(k, (s, _))| (*s, k))
        .collect();
    let mut a = vec![0f64; n * n];
    for (k, (_, norm)) in items.iter().enumerate() {
        a[k * n + k] = *norm as f64 + lambda;
    }
    for (i, row) in rows {
        let r = ix.get(i).copied();
        for (j, c) in row {
            if c == 0 {
                continue;
            }
            let (Some(r), Some(&col)) = (r, ix.get(j)) else {
                return Err(EaseError::Inconsistent(format!(
                    "row {i} counts {j}, and one of them has no norm"
                )));
            };
            a[r * n + col] = c as f64;
        }
    }
    let p = inverse_spd(a, n)?;
    let mut out = Vec::with_capacity(n);
    for j in 0..n {
        let pjj = p[j * n + j];
        let mut list: Vec<(String, f64)> = (0..n)
            .filter(|i| *i != j)
            .map(|i| (i, -p[i * n + j] / pjj))
            .filter(|(_, b)| *b > 0.0 && b.is_finite())
            .map(|(i, b)| (items[i].0.to_string(), b))
            .collect();
        let by =
            |x: &(String, f64), y: &(String, f64)| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(&y.0));
        if list.len() > neighbours {
            if neighbours == 0 {
                list.clear();
            } else {
                list.select_nth_unstable_by(neighbours - 1, by);
                list.truncate(neighbours);
            }
        }
        list.sort_by(by);
        out.push((items[j].0.to_string(), list));
    }
    Ok(out)
}

/// [`solve`] over one set of counts holding every row (a model trained in one process).
pub fn solve_counts(
    counts: &crate::Counts,
    lambda: f64,
    neighbours: usize,
) -> Result<Vec<List>, EaseError> {
    solve(
        counts
            .rows
            .iter()
            .map(|(i, r)| (i.as_str(), r.iter().map(|(j, c)| (j.as_str(), *c)))),
        counts.norms.iter().map(|(i, n)| (i.as_str(), *n)),
        lambda,
        neighbours,
    )
}

/// The inverse of the symmetric positive definite `a` (n×n, row-major, its lower half read),
/// through its Cholesky factor: A = L·Lᵀ, M = L⁻¹, A⁻¹ = Mᵀ·M. Every inner loop is a dot product
/// of two contiguous rows.
fn inverse_spd(mut a: Vec<f64>, n: usize) -> Result<Vec<f64>, EaseError> {
    // L, in place of a's lower half.
    for i in 0..n {
        for j in 0..=i {
            let (ri, rj) = (i * n, j * n);
            let dot: f64 = a[ri..ri + j]
                .iter()
                .zip(&a[rj..rj + j])
                .map(|(x, y)| x * y)
                .sum();
            let v = a[ri + j] - dot;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return Err(EaseError::Inconsistent(
                        "the counts are not positive definite".into(),
                    ));
                }
                a[ri + i] = v.sqrt();
            } else {
                a[ri + j] = v / a[rj + j];
            }
        }
    }
    // Mᵀ by rows: row j of Mᵀ is column j of M, the solution of L·x = e_j (x_i = 0 for i < j).
    let mut mt = vec![0f64; n * n];
    for j in 0..n {
        let rj = j * n;
        for i in j..n {
            let ri = i * n;
            let dot: f64 = a[ri + j..ri + i]
                .iter()
                .zip(&mt[rj + j..rj + i])
                .map(|(x, y)| x * y)
                .sum();
            let e = if i == j { 1.0 } else { 0.0 };
            mt[rj + i] = (e - dot) / a[ri + i];
        }
    }
    // A⁻¹[p][q] = Σ_k M[k][p]·M[k][q] = row p of Mᵀ · row q of Mᵀ, over k ≥ max(p, q); into a.
    for p in 0..n {
        for q in 0..=p {
            let (rp, rq) = (p * n, q * n);
            let v: f64 = mt[rp + p..rp + n]
                .iter()
                .zip(&mt[rq + p..rq + n])
                .map(|(x, y)| x * y)
                .sum();
            a[rp + q] = v;
            a[rq + p] = v;
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rows = HashMap<String, HashMap<String, u64>>;

    fn solve_maps(
        rows: &Rows,
        norms: &HashMap<String, u64>,
        lambda: f64,
        k: usize,
    ) -> Result<Vec<List>, EaseError> {
        solve(
            rows.iter()
                .map(|(i, r)| (i.as_str(), r.iter().map(|(j, c)| (j.as_str(), *c)))),
            norms.iter().map(|(i, n)| (i.as_str(), *n)),
            lambda,
            k,
        )
    }

    fn counts(pairs: &[(&str, &str, u64)], norms: &[(&str, u64)]) -> (Rows, HashMap<String, u64>) {
        let mut rows: HashMap<String, HashMap<String, u64>> = HashMap::new();
        for (i, j, c) in pairs {
            rows.entry(i.to_string())
                .or_default()
                .insert(j.to_string(), *c);
            rows.entry(j.to_string())
                .or_default()
                .insert(i.to_string(), *c);
        }
        let norms = norms.iter().map(|(i, n)| (i.to_string(), *n)).collect();
        (rows, norms)
    }

    #[test]
    fn two_items_have_the_closed_form_weight() {
        // G = [[4, 2], [2, 9]], λ = 1: B[a][b] = C / (norm_a + λ) = 2 / 5 and B[b][a] = 2 / 10.
        let (rows, norms) = counts(&[("a", "b", 2)], &[("a", 4), ("b", 9)]);
        let lists = solve_maps(&rows, &norms, 1.0, 10).unwrap();
        assert_eq!(lists.len(), 2);
        assert_eq!(lists[0].0, "a");
        assert_eq!(lists[0].1[0].0, "b");
        assert!((lists[0].1[0].1 - 2.0 / 10.0).abs() < 1e-12, "{lists:?}");
        assert!((lists[1].1[0].1 - 2.0 / 5.0).abs() < 1e-12, "{lists:?}");
    }

    #[test]
    fn the_inverse_times_the_matrix_is_the_identity() {
        let n = 7;
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = ((i * 7 + j * 3) % 5) as f64 + if i == j { 20.0 } else { 0.0 };
            }
        }
        for i in 0..n {
            for j in 0..i {
                a[j * n + i] = a[i * n + j];
            }
        }
        let inv = inverse_spd(a.clone(), n).unwrap();
        for i in 0..n {
            for j in 0..n {
                let v: f64 = (0..n).map(|k| a[i * n + k] * inv[k * n + j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-12, "({i},{j}) = {v}");
            }
        }
    }

    #[test]
    fn an_item_bought_with_another_is_its_best_neighbour_and_negative_weights_are_dropped() {
        // x and y always together, z alone mostly: y's list is led by x.
        let (rows, norms) = counts(
            &[("x", "y", 30), ("x", "z", 1), ("y", "z", 1)],
            &[("x", 31), ("y", 31), ("z", 40)],
        );
        let lists = solve_maps(&rows, &norms, 5.0, 10).unwrap();
        let y = &lists.iter().find(|(j, _)| j == "y").unwrap().1;
        assert_eq!(y[0].0, "x");
        assert!(y.iter().all(|(_, b)| *b > 0.0));
        let z = &lists.iter().find(|(j, _)| j == "z").unwrap().1;
        assert!(z.iter().all(|(i, _)| i != "z"), "no item lists itself");
    }

    #[test]
    fn refusals_say_why() {
        let (rows, norms) = counts(&[("a", "b", 1)], &[("a", 1)]);
        assert!(matches!(
            solve_maps(&rows, &norms, 1.0, 5),
            Err(EaseError::Inconsistent(_))
        ));
        assert_eq!(
            solve_maps(&rows, &norms, 0.0, 5),
            Err(EaseError::BadLambda(0.0))
        );
        let many: HashMap<String, u64> =
            (0..=MAX_EASE_ITEMS).map(|i| (format!("i{i}"), 1)).collect();
        let none = Rows::new();
        assert_eq!(
            solve_maps(&none, &many, 1.0, 5),
            Err(EaseError::TooManyItems {
                items: MAX_EASE_ITEMS + 1
            })
        );
    }
}
