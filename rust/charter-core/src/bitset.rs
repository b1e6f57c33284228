//! Fixed-width sets of action ids. The only place that knows the layout:
//! bit `a % 64` of word `a / 64`. All sets of one compiled policy have the
//! same width, so binary operations never need to resize.

/// A set of action ids over a fixed universe `0..len`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct ActionSet {
    words: Box<[u64]>,
    universe: u32,
}

impl std::fmt::Debug for ActionSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl ActionSet {
    /// The empty set over a universe of `universe` actions.
    pub fn empty(universe: usize) -> Self {
        ActionSet {
            words: vec![0u64; universe.div_ceil(64)].into_boxed_slice(),
            universe: universe as u32,
        }
    }

    /// The full set `0..universe`.
    pub fn full(universe: usize) -> Self {
        let mut s = Self::empty(universe);
        for a in 0..universe {
            s.insert(a as u32);
        }
        s
    }

    /// Remove `action` (a no-op if absent).
    #[inline]
    pub fn remove(&mut self, action: u32) {
        let (w, b) = split(action);
        if let Some(word) = self.words.get_mut(w) {
            *word &= !(1u64 << b);
        }
    }

    /// Add `action`; out-of-universe ids are ignored (they cannot be requested).
    #[inline]
    pub fn insert(&mut self, action: u32) {
        if action >= self.universe {
            return;
        }
        let (w, b) = split(action);
        if let Some(word) = self.words.get_mut(w) {
            *word |= 1u64 << b;
        }
    }

    /// Whether `action` is in the set; out-of-universe ids are not.
    #[inline(always)]
    pub fn contains(&self, action: u32) -> bool {
        let (w, b) = split(action);
        match self.words.get(w) {
            Some(word) => (word >> b) & 1 == 1,
            None => false,
        }
    }

    /// `self |= other`.
    pub fn union_with(&mut self, other: &ActionSet) {
        for (a, b) in self.words.iter_mut().zip(other.words.iter()) {
            *a |= *b;
        }
    }

    /// `self &= other`.
    pub fn intersect_with(&mut self, other: &ActionSet) {
        for (a, b) in self.words.iter_mut().zip(other.words.iter()) {
            *a &= *b;
        }
    }

    /// `self &= !other`.
    pub fn subtract(&mut self, other: &ActionSet) {
        for (a, b) in self.words.iter_mut().zip(other.words.iter()) {
            *a &= !*b;
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// The members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let b = rest.trailing_zeros();
                rest &= rest - 1;
                Some((w as u32) * 64 + b)
            })
        })
    }

    /// The raw words (bit `a % 64` of word `a / 64`).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Heap bytes used.
    pub fn heap_bytes(&self) -> usize {
        self.words.len() * 8
    }
}

#[inline(always)]
fn split(action: u32) -> (usize, u32) {
    ((action / 64) as usize, action % 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn behaves_like_a_set(universe in 1usize..300, a in proptest::collection::vec(0u32..300, 0..40), b in proptest::collection::vec(0u32..300, 0..40)) {
            let mut sa = ActionSet::empty(universe);
            let mut sb = ActionSet::empty(universe);
            let ra: BTreeSet<u32> = a.iter().copied().filter(|x| (*x as usize) < universe).collect();
            let rb: BTreeSet<u32> = b.iter().copied().filter(|x| (*x as usize) < universe).collect();
            for x in &a { sa.insert(*x); }
            for x in &b { sb.insert(*x); }
            prop_assert_eq!(sa.iter().collect::<BTreeSet<_>>(), ra.clone());
            for x in 0..320u32 { prop_assert_eq!(sa.contains(x), ra.contains(&x)); }
            let mut u = sa.clone(); u.union_with(&sb);
            prop_assert_eq!(u.iter().collect::<BTreeSet<_>>(), ra.union(&rb).copied().collect::<BTreeSet<_>>());
            let mut i = sa.clone(); i.intersect_with(&sb);
            prop_assert_eq!(i.iter().collect::<BTreeSet<_>>(), ra.intersection(&rb).copied().collect::<BTreeSet<_>>());
            let mut d = sa.clone(); d.subtract(&sb);
            prop_assert_eq!(d.iter().collect::<BTreeSet<_>>(), ra.difference(&rb).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(sa.is_empty(), ra.is_empty());
        }
    }

    #[test]
    fn full_has_exactly_the_universe() {
        let s = ActionSet::full(130);
        assert_eq!(s.iter().count(), 130);
        assert!(s.contains(129));
        assert!(!s.contains(130));
    }
}
