// Package queue is in charge of accepted mail until it is delivered, bounced
// or deleted by an admin: the durable on-disk spool, the schedule of delivery
// attempts, the retry policy and account pauses.
//
// Invariants: a message exists once its meta file is durably renamed into
// meta/ (the commit point), and only then does Enqueue return; every state
// change is written before it is acted on (attempt count and next attempt are
// saved before a delivery starts); what cannot be parsed is quarantined in
// corrupt/, never deleted. Only store.go touches the disk.
//
// queue knows nothing of SMTP servers or OAuth: it must not import relay or
// tokens. Delivery is handed to a Deliverer.
package queue
