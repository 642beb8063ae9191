package subjects

// IdempotencySubject is the stream subject behind one key of the
// idempotency bucket. Writing to it directly, with an expected last
// sequence and a message TTL, is the only way to replace a record under
// compare-and-set and keep a TTL on it (a KV Update drops the TTL; docs/nats.md).
func IdempotencySubject(tenant, keyHashHex string) string {
	return "$KV." + BucketIdempotency + "." + IdempotencyKey(tenant, keyHashHex)
}
