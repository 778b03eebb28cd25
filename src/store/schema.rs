//! Diesel table definitions matching `migrations/`.

diesel::table! {
    /// Latest state of every entity.
    troupe_entity_state (domain, key) {
        /// Owning domain.
        domain -> Text,
        /// Entity key.
        key -> Text,
        /// Serialized state.
        state -> Jsonb,
        /// Number of events applied to the entity.
        version -> Int8,
        /// Last write.
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// Emitted events waiting to be published.
    troupe_outbox (seq) {
        /// Publication order.
        seq -> Int8,
        /// Emitting domain.
        domain -> Text,
        /// Destination stream.
        stream -> Text,
        /// Envelope id.
        event_id -> Uuid,
        /// Envelope type.
        event_type -> Text,
        /// Envelope key.
        key -> Text,
        /// Envelope data (JSON text).
        data -> Text,
        /// W3C trace context of the emitting handler.
        traceparent -> Nullable<Text>,
        /// Commit time.
        created_at -> Timestamptz,
        /// When the relay published it (`NULL`: waiting); kept for the retention window.
        published_at -> Nullable<Timestamptz>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(troupe_entity_state, troupe_outbox);
