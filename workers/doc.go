// Package workers holds the long-running NATS consumers: the ETA responders
// that reserve agent-minutes in the slot buckets, and the allocator workers
// that write accepted tickets into each tenant's database.
//
// Both arrive with ticket admission (issue 3); the agents they read are
// published to subjects.BucketAgents by package tenants today.
package workers
