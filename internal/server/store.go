package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/behind"
	"github.com/tokengate/tokengate/limiter/boltstore"
	"github.com/tokengate/tokengate/limiter/fallback"
	"github.com/tokengate/tokengate/limiter/memstore"
	"github.com/tokengate/tokengate/limiter/redisstore"
)

// storeHooks are what a shared store's state reaches: logs, metrics, and
// the health service Envoy and Kubernetes probe.
type storeHooks struct {
	log     *zap.Logger
	metrics *metrics
	health  *health.Server
}

func openStore(c config.Store, clock limiter.Clock, hooks storeHooks) (limiter.Store, error) {
	switch c.Backend {
	case "memory":
		return memstore.New(), nil
	case "bbolt":
		b, err := boltstore.Open(boltstore.Options{Path: c.Bbolt.Path, FlushInterval: c.Bbolt.FlushInterval, Clock: clock,
			OnFlushError: func(err error) {
				hooks.metrics.storeCall("flush", 0, err)
				hooks.log.Error("bbolt flush failed; charges stay pending for the next flush", zap.Error(err))
			}})
		if err != nil {
			return nil, err
		}
		return b, nil
	case "redis":
		s := openRedis(c.Redis, clock, hooks)
		if c.Redis.Settle == config.SettleInline {
			return s, nil
		}
		b := behind.New(s, behind.Options{
			OnOverflow: hooks.metrics.overflow.Inc,
			OnBatch:    func(n int, _ time.Duration) { hooks.metrics.batches.Observe(float64(n)) },
		})
		pending := b.Pending
		hooks.metrics.pending.Store(&pending)
		return b, nil
	}
	return nil, usageError(fmt.Errorf("store.backend: unknown backend %q", c.Backend))
}

// openRedis does not dial: Redis may come up after tokengate, and until it
// does on_error decides, visibly.
func openRedis(c config.Redis, clock limiter.Clock, hooks storeHooks) limiter.Store {
	opts := &redis.UniversalOptions{
		Addrs:         c.Addrs,
		MasterName:    c.MasterName,
		IsClusterMode: c.Cluster,
		Username:      c.Username,
		Password:      os.Getenv(c.PasswordEnv),
		PoolSize:      c.PoolSize,
		DialTimeout:   c.DialTimeout,
		ReadTimeout:   c.ReadTimeout,
		WriteTimeout:  c.WriteTimeout,
		// A retry would double the wait past Envoy's message timeout;
		// on_error is the retry policy.
		MaxRetries: -1,
	}
	if c.TLS {
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	client := redis.NewUniversalClient(opts)
	if cc, ok := client.(*redis.ClusterClient); ok {
		clusterOnError(cc)
	}
	shared := redisstore.New(redisstore.Options{
		Client:     client,
		Prefix:     c.KeyPrefix,
		ServerTime: c.Clock == "server",
		HoldTTL:    c.HoldTTL,
		HoldLease:  c.HoldLease,
		Clock:      clock,
		// Renewals are off the request path: their failures are counted
		// (op "renew") and logged at debug; a hold whose renewals keep
		// failing frees after its lease, as a dead replica's would.
		OnRenew: func(holds int, took time.Duration, err error) {
			hooks.metrics.storeCall("renew", took, err)
			if err != nil {
				hooks.log.Debug("redis: renewing holds failed; the next round tries again",
					zap.Int("renewed", holds), zap.Error(err))
			}
		},
	})
	mode := fallback.OnError(c.OnError)
	return fallback.New(shared, fallback.Options{
		Mode:   mode,
		Retry:  c.RetryInterval,
		OnCall: hooks.metrics.storeCall,
		OnState: func(down bool, err error) {
			hooks.metrics.setStoreDown(down)
			if !down {
				hooks.log.Info("redis store is back", zap.String("on_error", c.OnError))
				hooks.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
				return
			}
			hooks.log.Error("redis store unavailable; on_error decides until it is back",
				zap.String("on_error", c.OnError), zap.Error(err), zap.Duration("retry_every", c.RetryInterval))
			if mode == fallback.FailClosed {
				hooks.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
			}
		},
	})
}

// clusterOnError makes a Cluster client treat a failed call as the single
// node and Sentinel clients do, which MaxRetries: -1 does not reach in
// go-redis's cluster client:
//
//   - No retry. Its redirect loop (up to MaxRedirects, 3) sends a call
//     again after a network error or a timeout, to the same node and then
//     to the slot's master again, with a backoff between: a call to a dead
//     or partitioned master then takes up to four timeouts, past Envoy's
//     message timeout (504 instead of on_error's answer), and a settle whose
//     reply was lost runs twice (charged twice). A network error is made
//     final for that loop (MOVED, ASK, TRYAGAIN and the other Redis replies
//     still go through it) and handed back as it was.
//   - The slot map reloaded at once. go-redis reloads it on MOVED, or when
//     it is 10 s old; after a master dies its replica serves the slots a
//     couple of seconds later, but a client that only ever got connection
//     errors from the dead master kept sending there until the map aged:
//     about 10 s of on_error answers for every key of that master, and of
//     all keys while the breaker stays open (measured by
//     TestRedisClusterFaults). A failed call now asks for a reload, which
//     go-redis runs once at a time in the background.
func clusterOnError(c *redis.ClusterClient) {
	c.OnNewNode(func(node *redis.Client) { node.AddHook(finalNetErrors{}) })
	c.AddHook(reloadOnNetError{c})
}

// finalError carries a network error through go-redis's cluster redirect
// loop without matching its retry tests (no Unwrap, no Timeout).
type finalError struct{ err error }

func (e finalError) Error() string { return e.err.Error() }

// netError reports whether err is the connection's (a dial, a reset, a
// timeout) rather than a reply of Redis or the caller's own end.
func netError(err error) bool {
	var reply redis.Error
	return err != nil && !errors.As(err, &reply) && !errors.Is(err, redis.ErrClosed) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// finalNetErrors is each cluster node's hook.
type finalNetErrors struct{}

func (finalNetErrors) DialHook(next redis.DialHook) redis.DialHook { return next }

func (finalNetErrors) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if netError(err) {
			return finalError{err}
		}
		return err
	}
}

func (finalNetErrors) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// reloadOnNetError is the cluster client's hook: it unwraps finalError and
// asks for a reload of the slot map after a network error.
type reloadOnNetError struct{ c *redis.ClusterClient }

func (reloadOnNetError) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h reloadOnNetError) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		var f finalError
		if errors.As(err, &f) {
			err = f.err
		}
		if netError(err) {
			h.c.ReloadState(ctx)
		}
		return err
	}
}

func (reloadOnNetError) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
