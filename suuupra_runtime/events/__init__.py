"""Domain events: transactional outbox, relay, JetStream streams, consumers, inbox, dead letters."""
