package feasible

// tree is a segment tree over n values with range add and range min,
// lazy: lz[v] is an add already applied to mn[v] and not yet pushed to
// v's children. Indexes are 0-based and ranges inclusive.
type tree struct {
	n  int
	mn []int64
	lz []int64
}

func newTree(vals []int64) *tree {
	t := &tree{n: len(vals), mn: make([]int64, 4*len(vals)+4), lz: make([]int64, 4*len(vals)+4)}
	if t.n > 0 {
		t.build(1, 0, t.n-1, vals)
	}
	return t
}

func (t *tree) build(v, lo, hi int, vals []int64) {
	if lo == hi {
		t.mn[v] = vals[lo]
		return
	}
	mid := (lo + hi) / 2
	t.build(2*v, lo, mid, vals)
	t.build(2*v+1, mid+1, hi, vals)
	t.mn[v] = min(t.mn[2*v], t.mn[2*v+1])
}

func (t *tree) push(v int) {
	if d := t.lz[v]; d != 0 {
		for _, c := range [2]int{2 * v, 2*v + 1} {
			t.mn[c] += d
			t.lz[c] += d
		}
		t.lz[v] = 0
	}
}

// add adds d to every value in [l, r]; an empty range is a no-op.
func (t *tree) add(l, r int, d int64) {
	if l > r || d == 0 {
		return
	}
	t.addRec(1, 0, t.n-1, l, r, d)
}

func (t *tree) addRec(v, lo, hi, l, r int, d int64) {
	if r < lo || hi < l {
		return
	}
	if l <= lo && hi <= r {
		t.mn[v] += d
		t.lz[v] += d
		return
	}
	t.push(v)
	mid := (lo + hi) / 2
	t.addRec(2*v, lo, mid, l, r, d)
	t.addRec(2*v+1, mid+1, hi, l, r, d)
	t.mn[v] = min(t.mn[2*v], t.mn[2*v+1])
}

// min returns the least value in [l, r]; ok is false for an empty range.
func (t *tree) min(l, r int) (m int64, ok bool) {
	if l > r {
		return 0, false
	}
	return t.minRec(1, 0, t.n-1, l, r), true
}

func (t *tree) minRec(v, lo, hi, l, r int) int64 {
	if l <= lo && hi <= r {
		return t.mn[v]
	}
	t.push(v)
	mid := (lo + hi) / 2
	switch {
	case r <= mid:
		return t.minRec(2*v, lo, mid, l, r)
	case l > mid:
		return t.minRec(2*v+1, mid+1, hi, l, r)
	}
	return min(t.minRec(2*v, lo, mid, l, r), t.minRec(2*v+1, mid+1, hi, l, r))
}
