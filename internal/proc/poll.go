package proc

import (
	"context"
	"fmt"
	"time"
)

// Poll calls cond at once and then every interval (> 0) until it returns
// nil, and returns nil; past timeout it returns cond's last error, and
// when ctx ends first, ctx's. cond is called once more when the timeout
// fires, so it is given the whole bound; with a timeout of zero or less
// it fails at once unless cond holds.
func Poll(ctx context.Context, timeout, every time.Duration, cond func() error) error {
	timer := time.NewTimer(max(timeout, 0))
	defer timer.Stop()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-tick.C:
		case <-timer.C:
			if err = cond(); err == nil {
				return nil
			}
			return fmt.Errorf("after %v: %w", timeout, err)
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		}
	}
}
