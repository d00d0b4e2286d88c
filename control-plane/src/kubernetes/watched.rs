//! What a watch of one kind of object knows, by name: the complete list in force, replaced only
//! once a relist is complete, so the last known state stays while the API server is away.

use std::collections::BTreeMap;

use kube::runtime::watcher::Event;

/// A watch of one kind, kept as the watcher's events say.
pub(crate) struct Watched<T> {
    /// The complete list in force; `None` until the first one.
    pub(crate) listed: Option<BTreeMap<String, T>>,
    /// A relist under way.
    relist: BTreeMap<String, T>,
}

impl<T> Default for Watched<T> {
    fn default() -> Self {
        Self {
            listed: None,
            relist: BTreeMap::new(),
        }
    }
}

impl<T> Watched<T> {
    /// Applies one event of the watch (`read` turns an object into its name and what is kept
    /// of it; `None`: nothing to keep); true when the list in force changed.
    pub(crate) fn apply<K>(
        &mut self,
        event: Event<K>,
        read: impl Fn(&K) -> Option<(String, T)>,
    ) -> bool
    where
        K: kube::Resource,
    {
        match event {
            Event::Init => {
                self.relist.clear();
                false
            }
            Event::InitApply(object) => {
                if let Some((name, kept)) = read(&object) {
                    self.relist.insert(name, kept);
                }
                false
            }
            Event::InitDone => {
                self.listed = Some(std::mem::take(&mut self.relist));
                true
            }
            Event::Apply(object) => {
                let Some(listed) = &mut self.listed else {
                    return false;
                };
                match read(&object) {
                    Some((name, kept)) => {
                        listed.insert(name, kept);
                    }
                    // An object that no longer qualifies (a slice whose label was removed).
                    None => {
                        if let Some(name) = object.meta().name.as_ref() {
                            listed.remove(name);
                        }
                    }
                }
                true
            }
            Event::Delete(object) => match (&mut self.listed, object.meta().name.as_ref()) {
                (Some(listed), Some(name)) => listed.remove(name).is_some(),
                _ => false,
            },
        }
    }
}
