//! Delivery-id bookkeeping: what a backend needs to settle each delivery it handed out.

use crate::{DeliveryId, Error};

/// The deliveries a backend handed out and has not settled yet, each with what settling
/// it needs (`T`: a receipt handle, a lock, an ack subject, or `()` when there is
/// nothing to settle).
///
/// Ids count up from 1 and are never reused; each delivery settles once, and a settled
/// one is forgotten, so memory stays bounded by the deliveries still in flight. Those
/// are few (the `run` driver settles each delivery before it asks for the next), so
/// they sit in a list: no map code in every backend, and no `HashMap` seed, which would
/// add a `wasi:random/insecure-seed` import to a backend that had none.
#[derive(Debug)]
pub struct Deliveries<T> {
    /// The last id handed out.
    last_id: DeliveryId,
    /// What each unsettled delivery needs to be settled.
    unsettled: Vec<(DeliveryId, T)>,
}

impl<T> Default for Deliveries<T> {
    fn default() -> Self {
        Self {
            last_id: 0,
            unsettled: Vec::new(),
        }
    }
}

impl<T> Deliveries<T> {
    /// Makes an empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a new delivery that settles with `token`, and returns its id.
    pub fn deliver(&mut self, token: T) -> DeliveryId {
        self.last_id += 1;
        self.unsettled.push((self.last_id, token));
        self.last_id
    }

    /// What each delivery not settled yet needs, to look at or update (a lock renewed).
    pub fn unsettled_mut(&mut self) -> impl Iterator<Item = (DeliveryId, &mut T)> {
        self.unsettled.iter_mut().map(|(id, token)| (*id, token))
    }

    /// Takes what settling delivery `id` needs; the id is settled from then on. An id
    /// that was never handed out, or is settled already, is an error.
    pub fn settle(&mut self, id: DeliveryId) -> Result<T, Error> {
        match self.unsettled.iter().position(|(open, _)| *open == id) {
            Some(index) => Ok(self.unsettled.swap_remove(index).1),
            None => Err(Error::other(format!(
                "delivery {id} is unknown or already settled"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_count_up_from_one() {
        let mut d = Deliveries::new();
        assert_eq!(d.deliver("a"), 1);
        assert_eq!(d.deliver("b"), 2);
        assert_eq!(d.settle(1), Ok("a"));
        assert_eq!(d.deliver("c"), 3, "ids are never reused");
    }

    #[test]
    fn each_delivery_settles_once() {
        let mut d = Deliveries::new();
        let id = d.deliver(String::from("receipt"));
        assert_eq!(d.settle(id).as_deref(), Ok("receipt"));
        assert_eq!(
            d.settle(id),
            Err(Error::other("delivery 1 is unknown or already settled"))
        );
    }

    #[test]
    fn unknown_ids_are_errors() {
        let mut d = Deliveries::<()>::new();
        assert_eq!(
            d.settle(7),
            Err(Error::other("delivery 7 is unknown or already settled"))
        );
        d.deliver(());
        assert!(d.settle(0).is_err());
        assert!(d.settle(2).is_err());
        assert_eq!(d.settle(1), Ok(()));
    }

    #[test]
    fn unsettled_deliveries_can_be_updated_until_settled() {
        let mut d = Deliveries::new();
        let (a, b) = (d.deliver(1), d.deliver(2));
        d.settle(a).unwrap();
        for (_, token) in d.unsettled_mut() {
            *token += 10;
        }
        assert_eq!(d.unsettled_mut().map(|(id, _)| id).collect::<Vec<_>>(), [b]);
        assert_eq!(d.settle(b), Ok(12));
    }

    #[test]
    fn settled_deliveries_are_forgotten() {
        let mut d = Deliveries::new();
        for round in 0..1_000u32 {
            let id = d.deliver(round);
            assert_eq!(d.settle(id), Ok(round));
        }
        assert!(d.unsettled.is_empty());
        let ids: Vec<_> = (0..3).map(|_| d.deliver(0)).collect();
        assert_eq!(d.unsettled.len(), 3);
        for id in ids {
            d.settle(id).unwrap();
        }
        assert!(d.unsettled.is_empty());
    }
}
