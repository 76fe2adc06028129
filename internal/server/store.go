package server

import (
	"crypto/tls"
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
		return behind.New(s, behind.Options{
			OnOverflow: hooks.metrics.overflow.Inc,
			OnBatch:    func(n int, _ time.Duration) { hooks.metrics.batches.Observe(float64(n)) },
		}), nil
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
	shared := redisstore.New(redisstore.Options{
		Client:     redis.NewUniversalClient(opts),
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
