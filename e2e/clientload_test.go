package e2e

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// clientLoad is a few HTTP clients sending requests back to back until
// stopped, each answer of type T kept: the traffic a fault lands in. It is
// bounded in count and time, whatever the test does, and stops when the
// test ends at the latest.
type clientLoad[T any] struct {
	stopped chan struct{}
	wg      sync.WaitGroup
	client  *http.Client

	mu      sync.Mutex
	answers []T
	changed chan struct{} // closed and replaced whenever answers grows
}

// loadBounds bound a clientLoad.
type loadBounds struct {
	clients, maxPerClient int
	maxWall               time.Duration
	timeout               time.Duration // of one request
}

// startClientLoad starts b.clients clients, each calling send with its
// number c and its request number n until stopped.
func startClientLoad[T any](t *testing.T, b loadBounds, send func(ctx context.Context, client *http.Client, c, n int) T) *clientLoad[T] {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = b.clients
	l := &clientLoad[T]{stopped: make(chan struct{}), changed: make(chan struct{}),
		client: &http.Client{Transport: tr, Timeout: b.timeout}}
	deadline := time.Now().Add(b.maxWall)
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(b.timeout))
	for c := range b.clients {
		l.wg.Go(func() {
			for n := range b.maxPerClient {
				select {
				case <-l.stopped:
					return
				default:
				}
				if !time.Now().Before(deadline) {
					return
				}
				a := send(ctx, l.client, c, n)
				l.mu.Lock()
				l.answers = append(l.answers, a)
				close(l.changed)
				l.changed = make(chan struct{})
				l.mu.Unlock()
			}
		})
	}
	t.Cleanup(func() {
		l.stop()
		cancel()
	})
	return l
}

// stop ends the load once every client's request in flight is answered,
// and returns every answer; it may be called again.
func (l *clientLoad[T]) stop() []T {
	l.mu.Lock()
	select {
	case <-l.stopped:
	default:
		close(l.stopped)
	}
	l.mu.Unlock()
	l.wg.Wait()
	l.client.CloseIdleConnections()
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.answers)
}

// waitFor waits until n answers match, and returns the matching ones;
// ok is false when timeout passed first.
func (l *clientLoad[T]) waitFor(match func(T) bool, n int, timeout time.Duration) (got []T, ok bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		l.mu.Lock()
		got = got[:0]
		for _, a := range l.answers {
			if match(a) {
				got = append(got, a)
			}
		}
		changed := l.changed
		l.mu.Unlock()
		if len(got) >= n {
			return got, true
		}
		select {
		case <-changed:
		case <-timer.C:
			return got, false
		}
	}
}
