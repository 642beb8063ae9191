package ingress

import (
	"hash/maphash"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// keyedLimiter is a token bucket per key (a tenant id, a client address):
// rate tokens a second, at most burst saved up. The clock is injected and
// every decision is taken at an explicit instant (rate.Limiter's ReserveN
// with a time), so tests drive it without sleeping.
//
// Buckets of keys that have gone quiet are dropped: a bucket idle for
// burst/rate has refilled, and a full bucket is exactly what a new one
// is, so dropping it changes no answer. Thousands of tenants that came
// once therefore cost nothing after a while.
//
// The buckets are spread over limiterShards maps by a hash of the key,
// each with its own lock, so that requests of different tenants do not
// queue for one process-wide mutex; a key's decisions are still taken
// one at a time under its shard's lock. The sweep of idle buckets goes
// over every shard, at most once per limiterSweepEvery for the whole
// limiter, as it did over the one map.
type keyedLimiter struct {
	limit rate.Limit
	burst int
	idle  time.Duration // drop a bucket unused this long
	now   func() time.Time
	seed  maphash.Seed

	// policy is the RateLimit-Policy member of this limit, set by
	// withPolicy (nil: no header).
	policy *rateLimitPolicy

	// lastSweep is the instant of the last sweep, in Unix nanoseconds
	// (0: never); the caller that advances it sweeps.
	lastSweep atomic.Int64
	shards    [limiterShards]limiterShard
}

// limiterShard is one lock and the buckets of the keys hashed to it.
type limiterShard struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time // the last request that asked it
}

// limiterShards is the number of maps a keyedLimiter spreads its keys
// over: well above the cores of the machines tms runs on.
const limiterShards = 64

// Idle eviction: a bucket is dropped no sooner than limiterMinIdle after
// its last use (or its refill time, if longer, capped at limiterMaxIdle),
// and the map is swept at most once per limiterSweepEvery.
const (
	limiterMinIdle    = time.Minute
	limiterMaxIdle    = 24 * time.Hour
	limiterSweepEvery = 30 * time.Second
)

// newKeyedLimiter returns a limiter of perSecond requests a second per
// key, bursts up to burst (0: perSecond rounded up, at least 1); nil, which
// allows everything, when perSecond is not positive.
func newKeyedLimiter(perSecond float64, burst int, now func() time.Time) *keyedLimiter {
	if perSecond <= 0 || math.IsNaN(perSecond) || math.IsInf(perSecond, 0) {
		return nil
	}
	if burst <= 0 {
		burst = max(1, int(math.Ceil(perSecond)))
	}
	// A rate so low that the refill time exceeds limiterMaxIdle gets a
	// free refill when its bucket is dropped: a small leniency for a
	// setting nobody uses, in exchange for a bounded map.
	refill := float64(burst) / perSecond * float64(time.Second)
	idle := limiterMaxIdle
	if refill < float64(limiterMaxIdle) {
		idle = max(limiterMinIdle, time.Duration(refill))
	}
	k := &keyedLimiter{limit: rate.Limit(perSecond), burst: burst, idle: idle, now: now, seed: maphash.MakeSeed()}
	for i := range k.shards {
		k.shards[i].buckets = map[string]*bucket{}
	}
	return k
}

// shard is the shard holding key's bucket.
func (k *keyedLimiter) shard(key string) *limiterShard {
	return &k.shards[maphash.String(k.seed, key)%limiterShards]
}

// allow takes one token from key's bucket. When there is none it takes
// nothing and returns how long until one is there.
func (k *keyedLimiter) allow(key string) (wait time.Duration, ok bool) {
	st := k.take(key)
	return st.wait, st.ok
}

// limitState is a decision of a limit and what the RateLimit field says
// of it: remaining units and the time until the next one comes back.
type limitState struct {
	ok        bool
	wait      time.Duration // refused: until the request would pass
	remaining int           // whole units left after this request
	next      time.Duration // until one more unit is there (0: full)
}

// take is allow with the bucket's state after the decision.
func (k *keyedLimiter) take(key string) limitState {
	if k == nil {
		return limitState{ok: true}
	}
	now := k.now()
	k.sweep(now)
	sh := k.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := sh.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(k.limit, k.burst)}
		sh.buckets[key] = b
	}
	b.last = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		// Only a burst below 1 refuses for ever, and burst is at least 1.
		return limitState{wait: time.Second, next: time.Second}
	}
	if d := r.DelayFrom(now); d > 0 {
		// A refused request must not eat into the next one's token.
		r.CancelAt(now)
		return limitState{wait: d, next: d}
	}
	tokens := b.lim.TokensAt(now)
	st := limitState{ok: true, remaining: max(0, int(math.Floor(tokens)))}
	if st.remaining < k.burst {
		st.next = time.Duration((float64(st.remaining+1) - tokens) / float64(k.limit) * float64(time.Second))
	}
	return st
}

// sweep drops the buckets idle for k.idle, at most once per
// limiterSweepEvery: the one caller that moves lastSweep on goes over
// the shards, taking each one's lock in turn (never two at once).
func (k *keyedLimiter) sweep(now time.Time) {
	last, at := k.lastSweep.Load(), now.UnixNano()
	if last != 0 && at-last < int64(limiterSweepEvery) {
		return
	}
	if !k.lastSweep.CompareAndSwap(last, at) {
		return // another caller sweeps
	}
	for i := range k.shards {
		sh := &k.shards[i]
		sh.mu.Lock()
		for key, b := range sh.buckets {
			if now.Sub(b.last) >= k.idle {
				delete(sh.buckets, key)
			}
		}
		sh.mu.Unlock()
	}
}

// size is the number of buckets held.
func (k *keyedLimiter) size() int {
	if k == nil {
		return 0
	}
	n := 0
	for i := range k.shards {
		sh := &k.shards[i]
		sh.mu.Lock()
		n += len(sh.buckets)
		sh.mu.Unlock()
	}
	return n
}

// RateLimit header fields, as draft-ietf-httpapi-ratelimit-headers-11
// (May 2026; the form has not changed since -08) defines them: both are
// Structured Field Lists (RFC 9651) of items named by a String.
//
//	RateLimit-Policy: "tenant";q=20;w=10
//	RateLimit: "tenant";r=17;t=1
//
// A policy says its quota q (requests) and the window w (seconds) over
// which the quota comes back; RateLimit says, per policy, the requests r
// left now and the seconds t until it has more. tms's limits are token
// buckets (and, for failures, a level that drains): a bucket of q
// tokens refilled at q/w a second. So t is the time until one more
// request is allowed (0 when the bucket is full), and on a 429 it is the
// Retry-After, the point in time the draft asks the two to agree on.
// The policy names are the fixed set of the policy* constants.
const (
	rateLimitField       = "RateLimit"
	rateLimitPolicyField = "RateLimit-Policy"
)

// policyKey is RateLimit-Policy as http.Header keys it (field names are
// case-insensitive: "Ratelimit-Policy" on the wire).
var policyKey = http.CanonicalHeaderKey(rateLimitPolicyField)

// Policy names: the limits whose state a client may read in the fields,
// spelled as the limit label of tms_ingress_rate_limited_total.
const (
	policyTenant         = limitTenant
	policyFairShare      = limitFairShare
	policyClientIP       = limitClientIP
	policyFailuresAddr   = limitFailuresAddr
	policyFailuresClient = limitFailuresClient
)

// rateLimitPolicy is one policy's precomputed RateLimit-Policy member:
// the field value is the same on every answer, so the hot path only adds
// a ready string.
type rateLimitPolicy struct {
	name   string
	member string   // "name";q=Q;w=W
	values []string // {member}, shared read-only by the answers' headers
}

func newRateLimitPolicy(name string, quota int, window time.Duration) *rateLimitPolicy {
	w := max(1, int64(math.Ceil(window.Seconds())))
	member := strconv.Quote(name) + ";q=" + strconv.Itoa(quota) + ";w=" + strconv.FormatInt(w, 10)
	return &rateLimitPolicy{name: name, member: member, values: []string{member}}
}

// withPolicy names k's RateLimit policy (q: its burst, w: the time to
// refill it from empty); k may be nil.
func (k *keyedLimiter) withPolicy(name string) *keyedLimiter {
	if k != nil {
		k.policy = newRateLimitPolicy(name, k.burst, time.Duration(float64(k.burst)/float64(k.limit)*float64(time.Second)))
	}
	return k
}

// policyOf is k's RateLimit policy (nil for no limiter, or none named).
func (k *keyedLimiter) policyOf() *rateLimitPolicy {
	if k == nil {
		return nil
	}
	return k.policy
}

// rateLimitMember is the RateLimit member of policy p in state st.
func rateLimitMember(p *rateLimitPolicy, st limitState) string {
	var buf [64]byte
	b := strconv.AppendQuote(buf[:0], p.name)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, int64(st.remaining), 10)
	b = append(b, ";t="...)
	t := int64(0)
	if st.next > 0 {
		t = int64(retryAfter(st.next))
	}
	b = strconv.AppendInt(b, t, 10)
	return string(b)
}

// addRateLimit adds policy p's members of both fields to h, for an
// answer in state st (several policies on one answer make a list of
// several members). p nil adds nothing.
func addRateLimit(h http.Header, p *rateLimitPolicy, st limitState) {
	if p == nil {
		return
	}
	if _, ok := h[policyKey]; ok {
		h.Add(rateLimitPolicyField, p.member)
	} else {
		// The one member of an answer limited once (create_ticket's): the
		// precomputed slice, no allocation. Its capacity is its length,
		// so a later Add copies rather than writes into it.
		h[policyKey] = p.values
	}
	h.Add(rateLimitField, rateLimitMember(p, st))
}

// rateLimitHeaders is the header map of a refusal by policy p (nil: no
// RateLimit fields), with its Retry-After: what errRateLimited sends.
func rateLimitHeaders(p *rateLimitPolicy, st limitState) map[string]string {
	h := map[string]string{"Retry-After": strconv.Itoa(retryAfter(st.wait))}
	if p != nil {
		h[rateLimitPolicyField] = p.member
		h[rateLimitField] = rateLimitMember(p, st)
	}
	return h
}

// retryAfter is a wait as a Retry-After value: whole seconds, rounded up,
// at least 1 (a client told 0 would retry at once).
func retryAfter(wait time.Duration) int {
	s := int(math.Ceil(wait.Seconds()))
	return max(1, s)
}

// failureLimiter counts failed attempts per key (a client address, a
// client_id) and slows, then locks out, a key that fails too often: the
// defence against password guessing. Successes cost nothing, so a script
// that logs in correctly is never held back by it.
//
// A key's failures are a level that one failure raises by 1 and that
// drops by 1 for each whole forget that passes without a failure. At soft or more, the key may try
// once per slowGap after its last failure (429 otherwise); reaching hard
// locks it out for lockout (429 with the time left), after which one
// more failure slows it again and hard-soft more lock it out again. The clock is injected.
//
// The limiter is per process: N ingress processes behind a balancer
// allow a guesser N times the tries.
type failureLimiter struct {
	soft, hard int
	forget     time.Duration
	slowGap    time.Duration
	lockout    time.Duration
	now        func() time.Time

	mu        sync.Mutex
	keys      map[string]*failureLevel
	lastSweep time.Time
}

type failureLevel struct {
	level       int       // as of at
	at          time.Time // of the last failure
	lockedUntil time.Time
}

// Failure limiter tuning: slowing starts at a third of the lockout
// count, with one try a second; a level is forgotten over the lockout.
const (
	failureSlowGap = time.Second
	// maxFailureKeys bounds the keys held (guessers can make up
	// client_ids); past it, a new key is not tracked until a sweep
	// frees room, and the address limit alone applies.
	maxFailureKeys = 100_000
)

// newFailureLimiter locks a key out for lockout after hard failures (nil,
// which allows everything, when hard is not positive).
func newFailureLimiter(hard int, lockout time.Duration, now func() time.Time) *failureLimiter {
	if hard <= 0 {
		return nil
	}
	return &failureLimiter{
		soft: max(1, hard/3), hard: hard,
		// A level of hard drains in one lockout.
		forget:  max(time.Millisecond, lockout/time.Duration(hard)),
		slowGap: failureSlowGap, lockout: lockout, now: now,
		keys: map[string]*failureLevel{},
	}
}

// levelAt is l's level at now: one failure forgotten for each whole
// forget since the last failure.
func (f *failureLimiter) levelAt(l *failureLevel, now time.Time) int {
	if !now.After(l.at) {
		return l.level
	}
	return max(0, l.level-int(now.Sub(l.at)/f.forget))
}

// check reports whether key may try now, and if not, how long until it
// may.
func (f *failureLimiter) check(key string) (wait time.Duration, ok bool) {
	st := f.checkState(key)
	return st.wait, st.ok
}

// checkState is check with what the RateLimit field says of the key: the
// failures it may still have before it is locked out (as of before this
// attempt, whose outcome is not known yet) and the time until one more
// is forgotten.
func (f *failureLimiter) checkState(key string) limitState {
	if f == nil {
		return limitState{ok: true}
	}
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.keys[key]
	if l == nil {
		return limitState{ok: true, remaining: f.hard}
	}
	if now.Before(l.lockedUntil) {
		d := l.lockedUntil.Sub(now)
		return limitState{wait: d, next: d}
	}
	level := f.levelAt(l, now)
	if level >= f.soft {
		if next := l.at.Add(f.slowGap); now.Before(next) {
			d := next.Sub(now)
			return limitState{wait: d, next: d}
		}
	}
	st := limitState{ok: true, remaining: f.hard - level}
	if level > 0 && now.After(l.at) {
		st.next = f.forget - now.Sub(l.at)%f.forget
	} else if level > 0 {
		st.next = l.at.Sub(now) + f.forget
	}
	return st
}

// policy is f's RateLimit policy: hard failures, forgotten over the
// lockout (nil for no limiter).
func (f *failureLimiter) policy(name string) *rateLimitPolicy {
	if f == nil {
		return nil
	}
	return newRateLimitPolicy(name, f.hard, f.lockout)
}

// fail counts one failed attempt of key.
func (f *failureLimiter) fail(key string) {
	if f == nil {
		return
	}
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sweep(now)
	l := f.keys[key]
	if l == nil {
		if len(f.keys) >= maxFailureKeys {
			return
		}
		l = &failureLevel{}
		f.keys[key] = l
	}
	l.level = f.levelAt(l, now) + 1
	l.at = now
	if l.level >= f.hard {
		l.lockedUntil = now.Add(f.lockout)
		// After the lockout one more failure slows the key again, and
		// hard-soft more lock it out again.
		l.level = f.soft - 1
		l.at = l.lockedUntil
	}
}

// sweep drops the keys whose level has drained and whose lockout is over,
// at most once per limiterSweepEvery (once a second when the map is
// full, so that a full map does not cost a sweep per failure); f.mu is
// held.
func (f *failureLimiter) sweep(now time.Time) {
	if since := now.Sub(f.lastSweep); since < limiterSweepEvery && (len(f.keys) < maxFailureKeys || since < time.Second) {
		return
	}
	f.lastSweep = now
	for key, l := range f.keys {
		if !now.Before(l.lockedUntil) && f.levelAt(l, now) == 0 {
			delete(f.keys, key)
		}
	}
}

// trustSet remembers which client addresses a tenant has logged in (or
// opened its account) from, so that the tenant's own address is not
// locked out by guessers elsewhere failing against its client_id.
type trustSet struct {
	ttl time.Duration
	now func() time.Time

	mu        sync.Mutex
	pairs     map[string]time.Time // client_id + " " + address: until
	lastSweep time.Time
}

const (
	trustTTL      = 7 * 24 * time.Hour
	maxTrustPairs = 100_000
)

func newTrustSet(now func() time.Time) *trustSet {
	return &trustSet{ttl: trustTTL, now: now, pairs: map[string]time.Time{}}
}

func (s *trustSet) add(clientID, addr string) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if since := now.Sub(s.lastSweep); since >= limiterSweepEvery || (len(s.pairs) >= maxTrustPairs && since >= time.Second) {
		s.lastSweep = now
		for k, until := range s.pairs {
			if !now.Before(until) {
				delete(s.pairs, k)
			}
		}
	}
	k := clientID + " " + addr
	if _, ok := s.pairs[k]; !ok && len(s.pairs) >= maxTrustPairs {
		return
	}
	s.pairs[k] = now.Add(s.ttl)
}

func (s *trustSet) has(clientID, addr string) bool {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.pairs[clientID+" "+addr]
	return ok && now.Before(until)
}
