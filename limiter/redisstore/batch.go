package redisstore

import (
	"context"
	"fmt"

	"github.com/tokengate/tokengate/limiter"
)

var _ limiter.BatchSettler = (*Store)(nil)

// SettleManyBatch implements limiter.BatchSettler: the settles charge
// without working out the answer nobody reads. On one Redis they go as
// one settleBatchScript call, in the pipeliner's queue: one round trip
// (shared with the checks queued meanwhile) and one script for the lot.
// In a Cluster, whose scripts must keep to one slot, each is decideScript's
// mode "b" sent on its own.
func (r *Store) SettleManyBatch(ctx context.Context, ss []limiter.Settle) []error {
	errs := make([]error, len(ss))
	for i, s := range ss {
		errs[i] = check(s.Budget, s.Used)
	}
	if r.pipe.cluster {
		r.settleEach(ctx, ss, errs)
	} else {
		r.settleBatch(ctx, ss, errs)
	}
	for i, s := range ss {
		if errs[i] == nil {
			r.leaseDrop(r.tag(s.Key), s.Holds.ID)
		}
		// Else the hold stays leased for the replay (see lease.go).
	}
	return errs
}

func (r *Store) settleEach(ctx context.Context, ss []limiter.Settle, errs []error) {
	calls := make([]*scriptCall, len(ss))
	batch := make([]*scriptCall, 0, len(ss))
	for i, s := range ss {
		if errs[i] != nil {
			continue
		}
		keys, args := r.script(r.tag(s.Key), s.Budget, "b", s.Holds.ID, s.Used, r.settleNowArg(s))
		calls[i] = &scriptCall{keys: keys, args: args, done: make(chan struct{})}
		batch = append(batch, calls[i])
	}
	if len(batch) > 0 {
		r.pipe.exec(ctx, batch)
	}
	for i, c := range calls {
		if c != nil && c.err != nil {
			errs[i] = fmt.Errorf("limiter: redis settle: %w", c.err)
		}
	}
}

func (r *Store) settleBatch(ctx context.Context, ss []limiter.Settle, errs []error) {
	var keys []string
	args := []any{(r.holdTTL - r.lease).Milliseconds(), 0}
	var sent []int // indexes into ss, in the script's order
	for i, s := range ss {
		if errs[i] != nil {
			continue
		}
		tag := r.tag(s.Key)
		keys = append(keys, tag+":h")
		args = append(args, r.settleNowArg(s), s.Holds.ID, len(s.Budget))
		for j := range s.Budget {
			l := &s.Budget[j]
			k, implicit := limitKey(tag, l)
			keys = append(keys, k)
			args = append(args, int(l.Period), l.Window.Milliseconds(), max(s.Used[j], 0), implicit)
		}
		sent = append(sent, i)
	}
	if len(sent) == 0 {
		return
	}
	args[1] = len(sent)
	// In the queue of the checks, so that a check queued after it is
	// answered with it (see limiter.Ordered).
	c := &scriptCall{script: settleBatchScript, keys: keys, args: args}
	r.pipe.call(ctx, c)
	for j, i := range sent {
		switch {
		case c.err != nil:
			errs[i] = fmt.Errorf("limiter: redis settle: %w", c.err)
		case j >= len(c.res):
			errs[i] = fmt.Errorf("limiter: redis settle: %d answers for %d settles", len(c.res), len(sent))
		default:
			if msg, ok := c.res[j].(string); ok {
				errs[i] = fmt.Errorf("limiter: redis settle: %s", msg)
			}
		}
	}
}
