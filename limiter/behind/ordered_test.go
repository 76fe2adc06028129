package behind

import (
	"context"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/memstore"
)

// ordered is a store that runs its calls in one order, as redisstore's
// pipeliner does: a check is answered as it takes its place, and a batch
// charges as it takes its place; the test decides when each does.
type ordered struct {
	*memstore.Store
	batchGo              chan struct{} // a batch takes its place once closed
	checkPlaced, checkGo chan struct{}
}

func (o *ordered) ReserveMany(ctx context.Context, key string, b limiter.Budget, n []int64, now time.Time) (limiter.Decisions, error) {
	d, err := o.Store.StatusMany(ctx, key, b, now)
	limiter.Ordered(ctx)()
	close(o.checkPlaced)
	<-o.checkGo
	return d, err
}

func (o *ordered) SettleManyBatch(ctx context.Context, ss []limiter.Settle) []error {
	<-o.batchGo
	limiter.Ordered(ctx)()
	errs := make([]error, len(ss))
	for i, s := range ss {
		_, errs[i] = o.Store.SettleMany(ctx, s.Key, s.Budget, s.Holds, s.Used, s.Now)
	}
	return errs
}

// A check counts the queued charges that its answer does not: those of
// batches placed after it, even when they land before it is answered (it
// once read them then, and missed them), and not those placed before it.
func TestCheckCountsChargesPlacedAfterIt(t *testing.T) {
	for _, checkFirst := range []bool{true, false} {
		o := &ordered{Store: memstore.New(), batchGo: make(chan struct{}), checkPlaced: make(chan struct{}), checkGo: make(chan struct{})}
		b := New(o, Options{Workers: 1, Linger: -1})
		if !b.SettleBehind(limiter.Settle{Key: "k", Budget: budget, Used: []int64{1, 10}, Now: now}) {
			t.Fatal("refused a settle")
		}
		if !checkFirst {
			close(o.batchGo)
			b.Flush()
		}
		got := make(chan limiter.Decisions, 1)
		go func() {
			d, err := b.ReserveMany(context.Background(), "k", budget, []int64{0, 0}, now)
			if err != nil {
				t.Error(err)
			}
			got <- d
		}()
		<-o.checkPlaced
		if checkFirst {
			// The batch lands while the check, answered without it, is
			// on its way back.
			close(o.batchGo)
			b.Flush()
		}
		close(o.checkGo)
		d := <-got
		if d.Limits[1].Used != 10 {
			t.Errorf("check placed first %v: used %d, want 10, the queued charge counted once", checkFirst, d.Limits[1].Used)
		}
		b.Close()
	}
}
