//! qiao patch: the insertion-ordered map behind `Map` with `preserve_order`, in place of
//! `IndexMap`.
//!
//! The entries live in one `Vec` in insertion order, as in `IndexMap`. A hash index over them
//! (SipHash with a random key under `std`, as before) is built only once an object has more
//! than [`SMALL`] keys; up to that many, a lookup compares the keys themselves. Most objects
//! of business messages have a handful of keys: for them parsing and building no longer hash
//! every key and allocate a table, and a lookup compares a few short strings instead of
//! hashing. Large objects keep the hash index, so a body with many keys still costs O(1) per
//! key and cannot be made quadratic.
//!
//! Behaviour is `IndexMap`'s for every method `map.rs` calls: insertion order, `swap_remove`
//! and `shift_remove`, `shift_insert`, order-insensitive equality.

use alloc::boxed::Box;
use alloc::vec::{self, Vec};
use core::borrow::Borrow;
use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::iter::FusedIterator;
use core::mem;
use core::slice;

use hashbrown::HashTable;

/// Up to this many entries an object has no hash index: comparing a key with the others
/// (mostly a length check) costs less than hashing it with SipHash and keeping a table.
/// 16 measured better than 8 in the pipeline bench (`parse` 3.2 → 2.9 µs, `map` 3.6 → 3.3 µs:
/// a Salesforce order record has 9 keys, a Kingdee `Model` more).
const SMALL: usize = 16;

#[cfg(feature = "std")]
type BuildHasherImpl = std::collections::hash_map::RandomState;
#[cfg(not(feature = "std"))]
type BuildHasherImpl = foldhash::fast::RandomState;

#[derive(Clone)]
pub(crate) struct SmallIndexMap<K, V> {
    entries: Vec<(K, V)>,
    /// Boxed: most maps have none, and a `Map` (so a `Value`) stays small without it.
    index: Option<Box<Index>>,
}

/// Positions in `entries`, by the hash of their key.
#[derive(Clone)]
struct Index {
    table: HashTable<usize>,
    hasher: BuildHasherImpl,
}

impl<K, V> Default for SmallIndexMap<K, V> {
    #[inline]
    fn default() -> Self {
        SmallIndexMap {
            entries: Vec::new(),
            index: None,
        }
    }
}

impl<K, V> SmallIndexMap<K, V> {
    #[inline]
    pub fn with_capacity(capacity: usize) -> Self {
        SmallIndexMap {
            entries: Vec::with_capacity(capacity),
            index: None,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[inline]
    pub fn clear(&mut self) {
        self.entries.clear();
        self.index = None;
    }

    #[inline]
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            iter: self.entries.iter(),
        }
    }

    #[inline]
    pub fn iter_mut(&mut self) -> IterMut<'_, K, V> {
        IterMut {
            iter: self.entries.iter_mut(),
        }
    }

    #[inline]
    pub fn keys(&self) -> Keys<'_, K, V> {
        Keys {
            iter: self.entries.iter(),
        }
    }

    #[inline]
    pub fn values(&self) -> Values<'_, K, V> {
        Values {
            iter: self.entries.iter(),
        }
    }

    #[inline]
    pub fn values_mut(&mut self) -> ValuesMut<'_, K, V> {
        ValuesMut {
            iter: self.entries.iter_mut(),
        }
    }

    #[inline]
    pub fn into_values(self) -> IntoValues<K, V> {
        IntoValues {
            iter: self.entries.into_iter(),
        }
    }
}

impl<K: Hash + Eq, V> SmallIndexMap<K, V> {
    /// The position of `key`, or, when it is absent, its hash if the map has an index.
    #[inline]
    fn lookup<Q>(&self, key: &Q) -> Result<usize, Option<u64>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        match &self.index {
            None => self
                .entries
                .iter()
                .position(|(k, _)| k.borrow() == key)
                .ok_or(None),
            Some(index) => {
                let hash = index.hasher.hash_one(key);
                let entries = &self.entries;
                match index.table.find(hash, |&i| entries[i].0.borrow() == key) {
                    Some(&i) => Ok(i),
                    None => Err(Some(hash)),
                }
            }
        }
    }

    #[inline]
    fn position<Q>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.lookup(key).ok()
    }

    /// Appends a key known to be absent; `hash` is its hash when the map has an index.
    /// Returns its position.
    fn push(&mut self, key: K, value: V, hash: Option<u64>) -> usize {
        let i = self.entries.len();
        self.entries.push((key, value));
        match &mut self.index {
            Some(index) => {
                let Index { table, hasher } = &mut **index;
                let hash = match hash {
                    Some(hash) => hash,
                    None => hasher.hash_one(&self.entries[i].0),
                };
                let entries = &self.entries;
                table.insert_unique(hash, i, |&j| hasher.hash_one(&entries[j].0));
            }
            None if self.entries.len() > SMALL => self.rebuild_index(),
            None => {}
        }
        i
    }

    /// (Re)builds the hash index over all entries, when the map is large enough to need one
    /// or already had one.
    fn rebuild_index(&mut self) {
        if self.index.is_none() && self.entries.len() <= SMALL {
            return;
        }
        let hasher = match self.index.take() {
            Some(index) => index.hasher,
            None => BuildHasherImpl::default(),
        };
        let mut table = HashTable::with_capacity(self.entries.capacity());
        let entries = &self.entries;
        for (i, (k, _)) in entries.iter().enumerate() {
            table.insert_unique(hasher.hash_one(k), i, |&j| hasher.hash_one(&entries[j].0));
        }
        self.index = Some(Box::new(Index { table, hasher }));
    }

    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.position(key).map(|i| &self.entries[i].1)
    }

    #[inline]
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    #[inline]
    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.position(key).map(|i| {
            let (k, v) = &self.entries[i];
            (k, v)
        })
    }

    #[inline]
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.position(key).is_some()
    }

    /// Sets `key` to `value`: an existing key keeps its position and the old value is
    /// returned; a new key goes last.
    #[inline]
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.lookup(&key) {
            Ok(i) => Some(mem::replace(&mut self.entries[i].1, value)),
            Err(hash) => {
                self.push(key, value, hash);
                None
            }
        }
    }

    /// Inserts at `index`, or moves an existing key there and sets its value (`IndexMap`'s
    /// `shift_insert`). Panics when `index` is out of bounds.
    pub fn shift_insert(&mut self, index: usize, key: K, value: V) -> Option<V> {
        match self.lookup(&key) {
            Ok(i) => {
                assert!(
                    index < self.entries.len(),
                    "index out of bounds: the len is {} but the index is {index}",
                    self.entries.len()
                );
                let (k, old) = self.entries.remove(i);
                self.entries.insert(index, (k, value));
                self.rebuild_index();
                Some(old)
            }
            Err(_) => {
                assert!(
                    index <= self.entries.len(),
                    "index out of bounds: the len is {} but the index is {index}",
                    self.entries.len()
                );
                self.entries.insert(index, (key, value));
                self.rebuild_index();
                None
            }
        }
    }

    /// Removes the entry at `i` from the index (not from `entries`).
    fn unindex(&mut self, i: usize) {
        if let Some(index) = &mut self.index {
            let Index { table, hasher } = &mut **index;
            let hash = hasher.hash_one(&self.entries[i].0);
            match table.find_entry(hash, |&j| j == i) {
                Ok(slot) => {
                    slot.remove();
                }
                Err(_) => unreachable!("every entry is in the index"),
            }
        }
    }

    fn swap_remove_index(&mut self, i: usize) -> (K, V) {
        self.unindex(i);
        let last = self.entries.len() - 1;
        if i != last {
            if let Some(index) = &mut self.index {
                let Index { table, hasher } = &mut **index;
                let hash = hasher.hash_one(&self.entries[last].0);
                match table.find_mut(hash, |&j| j == last) {
                    Some(slot) => *slot = i,
                    None => unreachable!("every entry is in the index"),
                }
            }
        }
        self.entries.swap_remove(i)
    }

    fn shift_remove_index(&mut self, i: usize) -> (K, V) {
        self.unindex(i);
        if let Some(index) = &mut self.index {
            for j in index.table.iter_mut() {
                if *j > i {
                    *j -= 1;
                }
            }
        }
        self.entries.remove(i)
    }

    #[inline]
    pub fn swap_remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.swap_remove_entry(key).map(|(_, v)| v)
    }

    pub fn swap_remove_entry<Q>(&mut self, key: &Q) -> Option<(K, V)>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let i = self.position(key)?;
        Some(self.swap_remove_index(i))
    }

    #[inline]
    pub fn shift_remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.shift_remove_entry(key).map(|(_, v)| v)
    }

    pub fn shift_remove_entry<Q>(&mut self, key: &Q) -> Option<(K, V)>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let i = self.position(key)?;
        Some(self.shift_remove_index(i))
    }

    pub fn retain<F>(&mut self, mut keep: F)
    where
        F: FnMut(&K, &mut V) -> bool,
    {
        let before = self.entries.len();
        self.entries.retain_mut(|(k, v)| keep(k, v));
        if self.entries.len() != before {
            self.rebuild_index();
        }
    }

    pub fn sort_unstable_keys(&mut self)
    where
        K: Ord,
    {
        self.entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.rebuild_index();
    }

    #[inline]
    pub fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        match self.lookup(&key) {
            Ok(index) => Entry::Occupied(OccupiedEntry { map: self, index }),
            Err(hash) => Entry::Vacant(VacantEntry {
                map: self,
                key,
                hash,
            }),
        }
    }
}

impl<K: Hash + Eq, V> Extend<(K, V)> for SmallIndexMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        let iter = iter.into_iter();
        self.entries.reserve(iter.size_hint().0);
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Hash + Eq, V> FromIterator<(K, V)> for SmallIndexMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = SmallIndexMap::default();
        map.extend(iter);
        map
    }
}

/// Equal when both hold the same keys with equal values, in any order (as `IndexMap`).
impl<K: Hash + Eq, V: PartialEq> PartialEq for SmallIndexMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .entries
                .iter()
                .all(|(k, v)| other.get(k).is_some_and(|w| v == w))
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for SmallIndexMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl<K, V> IntoIterator for SmallIndexMap<K, V> {
    type Item = (K, V);
    type IntoIter = IntoIter<K, V>;

    #[inline]
    fn into_iter(self) -> IntoIter<K, V> {
        IntoIter {
            iter: self.entries.into_iter(),
        }
    }
}

pub(crate) enum Entry<'a, K, V> {
    Vacant(VacantEntry<'a, K, V>),
    Occupied(OccupiedEntry<'a, K, V>),
}

pub(crate) struct VacantEntry<'a, K, V> {
    map: &'a mut SmallIndexMap<K, V>,
    key: K,
    hash: Option<u64>,
}

impl<'a, K: Hash + Eq, V> VacantEntry<'a, K, V> {
    #[inline]
    pub fn key(&self) -> &K {
        &self.key
    }

    #[inline]
    pub fn insert(self, value: V) -> &'a mut V {
        let i = self.map.push(self.key, value, self.hash);
        &mut self.map.entries[i].1
    }
}

pub(crate) struct OccupiedEntry<'a, K, V> {
    map: &'a mut SmallIndexMap<K, V>,
    index: usize,
}

impl<'a, K: Hash + Eq, V> OccupiedEntry<'a, K, V> {
    #[inline]
    pub fn key(&self) -> &K {
        &self.map.entries[self.index].0
    }

    #[inline]
    pub fn get(&self) -> &V {
        &self.map.entries[self.index].1
    }

    #[inline]
    pub fn get_mut(&mut self) -> &mut V {
        &mut self.map.entries[self.index].1
    }

    #[inline]
    pub fn into_mut(self) -> &'a mut V {
        &mut self.map.entries[self.index].1
    }

    #[inline]
    pub fn insert(&mut self, value: V) -> V {
        mem::replace(self.get_mut(), value)
    }

    #[inline]
    pub fn swap_remove(self) -> V {
        self.swap_remove_entry().1
    }

    #[inline]
    pub fn shift_remove(self) -> V {
        self.shift_remove_entry().1
    }

    #[inline]
    pub fn swap_remove_entry(self) -> (K, V) {
        self.map.swap_remove_index(self.index)
    }

    #[inline]
    pub fn shift_remove_entry(self) -> (K, V) {
        self.map.shift_remove_index(self.index)
    }
}

macro_rules! iterator {
    ($(#[$attr:meta])* $name:ident<$($lt:lifetime,)? K, V>, $inner:ty, $item:ty, |$e:pat_param| $map:expr) => {
        $(#[$attr])*
        pub(crate) struct $name<$($lt,)? K, V> {
            iter: $inner,
        }

        impl<$($lt,)? K, V> Iterator for $name<$($lt,)? K, V> {
            type Item = $item;

            #[inline]
            fn next(&mut self) -> Option<$item> {
                self.iter.next().map(|$e| $map)
            }

            #[inline]
            fn size_hint(&self) -> (usize, Option<usize>) {
                self.iter.size_hint()
            }
        }

        impl<$($lt,)? K, V> DoubleEndedIterator for $name<$($lt,)? K, V> {
            #[inline]
            fn next_back(&mut self) -> Option<$item> {
                self.iter.next_back().map(|$e| $map)
            }
        }

        impl<$($lt,)? K, V> ExactSizeIterator for $name<$($lt,)? K, V> {
            #[inline]
            fn len(&self) -> usize {
                self.iter.len()
            }
        }

        impl<$($lt,)? K, V> FusedIterator for $name<$($lt,)? K, V> {}
    };
}

iterator!(#[derive(Clone, Debug)] Iter<'a, K, V>, slice::Iter<'a, (K, V)>, (&'a K, &'a V), |(k, v)| (k, v));
iterator!(#[derive(Debug)] IterMut<'a, K, V>, slice::IterMut<'a, (K, V)>, (&'a K, &'a mut V), |(k, v)| (&*k, v));
iterator!(#[derive(Clone, Debug)] Keys<'a, K, V>, slice::Iter<'a, (K, V)>, &'a K, |(k, _)| k);
iterator!(#[derive(Clone, Debug)] Values<'a, K, V>, slice::Iter<'a, (K, V)>, &'a V, |(_, v)| v);
iterator!(#[derive(Debug)] ValuesMut<'a, K, V>, slice::IterMut<'a, (K, V)>, &'a mut V, |(_, v)| v);
iterator!(#[derive(Debug)] IntoIter<K, V>, vec::IntoIter<(K, V)>, (K, V), |kv| kv);
iterator!(#[derive(Debug)] IntoValues<K, V>, vec::IntoIter<(K, V)>, V, |(_, v)| v);

#[cfg(test)]
mod tests {
    use super::{SmallIndexMap, SMALL};
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    fn keys(map: &SmallIndexMap<String, usize>) -> Vec<&str> {
        map.keys().map(String::as_str).collect()
    }

    /// Every operation, at sizes on both sides of the threshold, against a plain list.
    #[test]
    fn behaves_as_an_ordered_map_below_and_above_the_threshold() {
        for n in [0, 1, SMALL - 1, SMALL, SMALL + 1, 3 * SMALL] {
            let mut map = SmallIndexMap::default();
            let mut model: Vec<(String, usize)> = Vec::new();
            for i in 0..n {
                assert_eq!(map.insert(i.to_string(), i), None);
                model.push((i.to_string(), i));
            }
            assert_eq!(map.len(), n);
            assert_eq!(map.index.is_some(), n > SMALL, "index at {n}");
            for i in 0..n {
                assert_eq!(map.get(i.to_string().as_str()), Some(&i));
                assert_eq!(map.insert(i.to_string(), i + 100), Some(i));
                assert_eq!(map.insert(i.to_string(), i), Some(i + 100));
            }
            assert_eq!(map.get("absent"), None);
            let expect: Vec<String> = model.iter().map(|(k, _)| k.clone()).collect();
            assert_eq!(keys(&map), expect);
            if n < 3 {
                continue;
            }
            // swap_remove moves the last entry into the hole, shift_remove closes it.
            assert_eq!(map.swap_remove("1"), Some(1));
            model.swap_remove(1);
            assert_eq!(map.shift_remove("0"), Some(0));
            model.remove(0);
            assert_eq!(map.shift_insert(0, "new".to_string(), 7), None);
            model.insert(0, ("new".to_string(), 7));
            let last = model.last().unwrap().0.clone();
            assert_eq!(map.shift_insert(1, last.clone(), 9), Some(model.last().unwrap().1));
            let moved = model.pop().unwrap();
            model.insert(1, (moved.0, 9));
            map.retain(|_, v| *v % 3 != 2);
            model.retain(|(_, v)| *v % 3 != 2);
            let expect: Vec<String> = model.iter().map(|(k, _)| k.clone()).collect();
            assert_eq!(keys(&map), expect);
            for (k, v) in &model {
                assert_eq!(map.get(k.as_str()), Some(v), "{k} after removals at {n}");
            }
            assert_eq!(map.get("0"), None);
            assert_eq!(map.get("1"), None);
        }
    }

    #[test]
    fn equality_ignores_order_and_entries_work() {
        let a: SmallIndexMap<String, usize> = (0..20).map(|i| (i.to_string(), i)).collect();
        let b: SmallIndexMap<String, usize> = (0..20).rev().map(|i| (i.to_string(), i)).collect();
        assert!(a == b);
        let small: SmallIndexMap<String, usize> = (0..3).map(|i| (i.to_string(), i)).collect();
        assert!(a != small);

        let mut map = SmallIndexMap::default();
        for i in 0..(2 * SMALL) {
            match map.entry(i.to_string()) {
                super::Entry::Vacant(e) => *e.insert(i) += 1,
                super::Entry::Occupied(_) => panic!("{i} is new"),
            }
        }
        match map.entry("3".to_string()) {
            super::Entry::Occupied(e) => assert_eq!(e.swap_remove_entry(), ("3".to_string(), 4)),
            super::Entry::Vacant(_) => panic!("3 is there"),
        }
        // The last key moved into the hole, and both are still found through the index.
        let last = (2 * SMALL - 1).to_string();
        assert_eq!(map.get(last.as_str()), Some(&(2 * SMALL)));
        assert_eq!(keys(&map)[3], last);
        assert_eq!(map.get("3"), None);
    }
}
