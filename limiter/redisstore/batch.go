package redisstore

import (
	"context"
	"fmt"

	"github.com/tokengate/tokengate/limiter"
)

var _ limiter.BatchSettler = (*Store)(nil)

// SettleManyBatch implements limiter.BatchSettler: every settle's script
// sent as the pipeliner sends concurrent calls (one pipeline, one round
// trip; each on its own in a Cluster; a script Redis does not have yet
// sent again whole), each charging without working out the answer
// nobody reads (mode "b").
func (r *Store) SettleManyBatch(ctx context.Context, ss []limiter.Settle) []error {
	errs := make([]error, len(ss))
	calls := make([]*scriptCall, len(ss))
	batch := make([]*scriptCall, 0, len(ss))
	for i, s := range ss {
		if errs[i] = check(s.Budget, s.Used); errs[i] != nil {
			continue
		}
		keys, args := r.script(r.tag(s.Key), s.Budget, "b", s.Holds.ID, s.Used, s.Now)
		calls[i] = &scriptCall{keys: keys, args: args, done: make(chan struct{})}
		batch = append(batch, calls[i])
	}
	if len(batch) > 0 {
		r.pipe.exec(ctx, batch)
	}
	for i, c := range calls {
		switch {
		case c == nil:
		case c.err != nil:
			// The hold stays leased for the replay (see lease.go).
			errs[i] = fmt.Errorf("limiter: redis settle: %w", c.err)
		default:
			r.leaseDrop(r.tag(ss[i].Key), ss[i].Holds.ID)
		}
	}
	return errs
}
