package redisstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/limiter"
)

var _ limiter.BatchSettler = (*Store)(nil)

// SettleManyBatch implements limiter.BatchSettler: every settle's script
// in one pipeline, one round trip (per node, in a Cluster), each charging
// without working out the answer nobody reads. A script
// Redis does not have yet (a restarted or failed-over node) is sent again
// whole, each on its own.
func (r *Store) SettleManyBatch(ctx context.Context, ss []limiter.Settle) []error {
	errs := make([]error, len(ss))
	if r.pipe.cluster {
		// One call per settle (see pipeliner): sent together, each on
		// its own.
		var wg sync.WaitGroup
		for i, s := range ss {
			if errs[i] = check(s.Budget, s.Used); errs[i] != nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				tag := r.tag(s.Key)
				keys, args := r.script(tag, s.Budget, "b", s.Holds.ID, s.Used, s.Now)
				if err := decideScript.Run(ctx, r.c, keys, args...).Err(); err != nil {
					errs[i] = fmt.Errorf("limiter: redis settle: %w", err)
					return
				}
				r.leaseDrop(tag, s.Holds.ID)
			}()
		}
		wg.Wait()
		return errs
	}
	cmds := make([]*redis.Cmd, len(ss))
	pipe := r.c.Pipeline()
	for i, s := range ss {
		if errs[i] = check(s.Budget, s.Used); errs[i] != nil {
			continue
		}
		// The answer is not read: the script charges and stops ("b").
		keys, args := r.script(r.tag(s.Key), s.Budget, "b", s.Holds.ID, s.Used, s.Now)
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
