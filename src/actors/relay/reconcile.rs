//! How the relay brings Redis's marker and the outbox in line after Redis or Postgres went
//! back: a pure decision over what each side says, so every case is unit-tested.

use crate::store::outbox::OutboxView;
use crate::streams::outbox_relay::Marker;

/// What the relay must do to bring Redis's marker and the outbox in line. Each plan names the
/// marker Redis holds afterwards; the relay publishes the rows after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconcile {
    /// Redis holds exactly what Postgres records as published.
    InStep(Marker),
    /// Redis lost published events: the retained rows after `after` are published again, in
    /// order (the marker is set to `after`, `0` when Redis lost it too).
    Republish {
        /// Redis holds everything up to here.
        after: Marker,
    },
    /// Redis holds more than Postgres recorded (a crash between publishing and recording):
    /// record the rows through the marker as published.
    RecordThrough(Marker),
    /// The marker names an event the outbox does not have at its `seq`: Postgres went back
    /// (a restore, a reset, a failover that lost commits). The marker moves down to
    /// Postgres's last published row, so rows that reuse sequence numbers are published.
    PostgresWentBack {
        /// The new marker.
        to: Marker,
    },
    /// The marker's row was pruned (Redis behind by more than the retention window): every
    /// retained row is published again; events older than the window may be missing.
    RepublishAll,
    /// A marker of the earlier format (a bare `seq`, written by a relay that deleted what it
    /// published): rows through it are recorded as published and the marker is rewritten.
    Upgrade(Marker),
}

/// Decides how to reconcile Redis's `marker` with the outbox as `view` describes it.
pub fn reconcile(marker: Option<&Marker>, view: &OutboxView) -> Reconcile {
    let last = view
        .last_published
        .as_ref()
        .map(|(seq, id)| Marker {
            seq: *seq,
            event_id: id.clone(),
        })
        .unwrap_or_default();
    let marker = match marker {
        Some(m) if m.seq > 0 => m,
        // No marker, or one that points before everything: Redis holds nothing published.
        Some(m) if last.seq == 0 => return Reconcile::InStep(m.clone()),
        None if last.seq == 0 => return Reconcile::InStep(Marker::default()),
        _ => {
            return Reconcile::Republish {
                after: Marker::default(),
            };
        }
    };
    if marker.event_id.is_empty() {
        // Beyond every row Postgres has: not an earlier relay's position, Postgres went back.
        if view.max_seq.is_none_or(|max| marker.seq > max) {
            return Reconcile::PostgresWentBack { to: last };
        }
        return Reconcile::Upgrade(marker.clone());
    }
    match view.marker_row {
        Some(seq) if seq == marker.seq => match marker.seq.cmp(&last.seq) {
            std::cmp::Ordering::Less => Reconcile::Republish {
                after: marker.clone(),
            },
            std::cmp::Ordering::Greater => Reconcile::RecordThrough(marker.clone()),
            std::cmp::Ordering::Equal => Reconcile::InStep(marker.clone()),
        },
        // The event is gone from below the retained rows: pruned, Redis is that far behind.
        None if view.min_seq.is_some_and(|min| marker.seq < min) => Reconcile::RepublishAll,
        // Not where the marker says, or not there at all: this is not Postgres's history.
        _ => Reconcile::PostgresWentBack { to: last },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(seq: i64, id: &str) -> Marker {
        Marker {
            seq,
            event_id: id.into(),
        }
    }

    fn view(last: Option<(i64, &str)>, marker_row: Option<i64>, range: (i64, i64)) -> OutboxView {
        OutboxView {
            last_published: last.map(|(s, i)| (s, i.to_owned())),
            marker_row,
            min_seq: Some(range.0),
            max_seq: Some(range.1),
        }
    }

    #[test]
    fn a_marker_at_the_last_published_row_is_in_step() {
        let v = view(Some((10, "a")), Some(10), (1, 12));
        assert_eq!(
            reconcile(Some(&m(10, "a")), &v),
            Reconcile::InStep(m(10, "a"))
        );
        assert_eq!(
            reconcile(None, &OutboxView::default()),
            Reconcile::InStep(Marker::default())
        );
    }

    #[test]
    fn redis_behind_republishes_after_its_marker() {
        let v = view(Some((10, "a")), Some(7), (1, 12));
        assert_eq!(
            reconcile(Some(&m(7, "x")), &v),
            Reconcile::Republish { after: m(7, "x") }
        );
        // Redis lost everything, marker included.
        assert_eq!(
            reconcile(None, &v),
            Reconcile::Republish {
                after: Marker::default()
            }
        );
    }

    #[test]
    fn a_marker_ahead_on_the_same_event_records_the_rows_published() {
        let v = view(Some((10, "a")), Some(12), (1, 14));
        assert_eq!(
            reconcile(Some(&m(12, "c")), &v),
            Reconcile::RecordThrough(m(12, "c"))
        );
    }

    #[test]
    fn a_marker_postgres_does_not_know_means_postgres_went_back() {
        // The marker is beyond every row Postgres has.
        let v = view(Some((10, "a")), None, (1, 11));
        assert_eq!(
            reconcile(Some(&m(500, "z")), &v),
            Reconcile::PostgresWentBack { to: m(10, "a") }
        );
        // Or within the retained rows but not there: Postgres lost it (a gap left by a
        // rolled-back unit would still hold the marker's event, which was published).
        let v = view(Some((10, "a")), None, (1, 600));
        assert_eq!(
            reconcile(Some(&m(500, "z")), &v),
            Reconcile::PostgresWentBack { to: m(10, "a") }
        );
        // Or the event is there under another seq.
        let v = view(Some((10, "a")), Some(3), (1, 600));
        assert_eq!(
            reconcile(Some(&m(500, "z")), &v),
            Reconcile::PostgresWentBack { to: m(10, "a") }
        );
        // An empty outbox after a reset.
        assert_eq!(
            reconcile(Some(&m(500, "z")), &OutboxView::default()),
            Reconcile::PostgresWentBack {
                to: Marker::default()
            }
        );
    }

    #[test]
    fn a_marker_whose_row_was_pruned_republishes_everything_kept() {
        let v = view(Some((900, "a")), None, (800, 950));
        assert_eq!(reconcile(Some(&m(5, "old")), &v), Reconcile::RepublishAll);
    }

    #[test]
    fn a_bare_number_marker_is_upgraded() {
        let v = view(None, None, (1, 30));
        assert_eq!(
            reconcile(Some(&m(17, "")), &v),
            Reconcile::Upgrade(m(17, ""))
        );
    }
}
