//! Delivery-id bookkeeping: what each unsettled delivery needs to be settled.
//!
//! Kept apart so it can give way to the shared `common::Deliveries<T>` once that lands.

use common::DeliveryId;

/// The unsettled deliveries, each with its settlement data `T`.
#[derive(Debug)]
pub struct Deliveries<T> {
    /// The last id handed out.
    last: DeliveryId,
    /// Unsettled deliveries that have something to settle (a handful at most: the driver
    /// settles each before it asks for the next, so a list beats a hash map's code size).
    open: Vec<(DeliveryId, T)>,
}

impl<T> Default for Deliveries<T> {
    fn default() -> Self {
        Self {
            last: 0,
            open: Vec::new(),
        }
    }
}

impl<T> Deliveries<T> {
    /// Hands out the next id, remembering `settle` for it when there is any.
    pub fn add(&mut self, settle: Option<T>) -> DeliveryId {
        self.last += 1;
        if let Some(settle) = settle {
            self.open.push((self.last, settle));
        }
        self.last
    }

    /// Forgets delivery `id`, returning what settles it (`None` when nothing does).
    pub fn take(&mut self, id: DeliveryId) -> Option<T> {
        let at = self.open.iter().position(|(open, _)| *open == id)?;
        Some(self.open.swap_remove(at).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_and_taken_once() {
        let mut d = Deliveries::default();
        let a = d.add(Some("a"));
        let b = d.add(None);
        assert_ne!(a, b);
        assert_eq!(d.take(b), None);
        assert_eq!(d.take(a), Some("a"));
        assert_eq!(d.take(a), None);
    }
}
