package redisstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/limiter"
)

var _ limiter.BatchSettler = (*Store)(nil)

// SettleManyBatch implements limiter.BatchSettler: every settle's script
// in one pipeline, one round trip (per node, in a Cluster). A script
// Redis does not have yet (a restarted or failed-over node) is sent again
// whole, each on its own.
func (r *Store) SettleManyBatch(ctx context.Context, ss []limiter.Settle) []error {
	errs := make([]error, len(ss))
	cmds := make([]*redis.Cmd, len(ss))
	pipe := r.c.Pipeline()
	for i, s := range ss {
		if errs[i] = check(s.Budget, s.Used); errs[i] != nil {
			continue
		}
		keys, args := r.script(r.tag(s.Key), s.Budget, "c", s.Holds.ID, s.Used, s.Now)
		cmds[i] = decideScript.EvalSha(ctx, pipe, keys, args...)
	}
	_, execErr := pipe.Exec(ctx) // each command's own error is read below
	for i, cmd := range cmds {
		if cmd == nil {
			continue
		}
		err := cmd.Err()
		if err == nil && cmd.Val() == nil {
			// Never answered: the pipeline failed before it (a refused
			// dial leaves its commands without an error of their own).
			err = cmp.Or(execErr, errors.New("no reply"))
		}
		switch {
		case err != nil && redis.HasErrorPrefix(err, "NOSCRIPT"):
			_, errs[i] = r.SettleMany(ctx, ss[i].Key, ss[i].Budget, ss[i].Holds, ss[i].Used, ss[i].Now)
		case err != nil:
			// The hold stays leased for the replay (see lease.go).
			errs[i] = fmt.Errorf("limiter: redis settle: %w", err)
		default:
			r.leaseDrop(r.tag(ss[i].Key), ss[i].Holds.ID)
		}
	}
	return errs
}
