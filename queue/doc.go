// Package queue is in charge of accepted mail until it is delivered, bounced
// or deleted by an admin: the durable on-disk spool, the schedule of delivery
// attempts, the retry policy and account pauses.
//
// Invariants: a message exists once its record is in the spool log and an
// fdatasync that began after it was written has finished (the commit
// point), and only then does Enqueue return; a body too large for the log
// is durable in msg/ before its record is written. Every state change is
// written before it is acted on (attempt count and next attempt are saved
// before a delivery starts); what cannot be parsed is quarantined in
// corrupt/, never deleted. Only store*.go touch the disk.
//
// queue knows nothing of SMTP servers or OAuth: it must not import relay or
// tokens. Delivery is handed to a Deliverer.
package queue
