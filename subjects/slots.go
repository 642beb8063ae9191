package subjects

import "time"

// SlotSubject is the stream subject behind one slot key. Publishing to it
// with an expected last sequence and a message TTL is how a responder
// turns a hold into a confirmed reservation under compare-and-set while
// setting the reservation's own TTL (a KV Update drops the TTL; docs/nats.md).
func SlotSubject(tenant, agent string, minute time.Time, shards int) string {
	return "$KV." + SlotBucket(SlotShard(tenant, shards)) + "." + SlotKey(tenant, agent, minute)
}
