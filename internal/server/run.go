// Package server is tokengate assembled: flags, configuration, the store,
// the ext_proc and admin listeners, reloads and shutdown. cmd/tokengate is
// a thin main over Run, and tokenlab runs the same server in its process.
package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/tokengate/tokengate/extproc"
	"github.com/tokengate/tokengate/extproc/policy"
	"github.com/tokengate/tokengate/extproc/tokenize"
	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/limiter"
	adminv1 "github.com/tokengate/tokengate/proto/tokengate/admin/v1"
)

// exitError carries a process exit code: 2 for a configuration the server
// refuses to start with, as flag parsing does.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageError(err error) error { return &exitError{code: 2, err: err} }

// ExitCode is the process exit code for an error Run returned: 2 for a
// bad command line or configuration, 1 for anything else.
func ExitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

type options struct {
	configPath   string
	listen       string
	adminListen  string
	logFormat    string
	logLevel     string
	drainTimeout time.Duration
	drainDelay   time.Duration
	fakeClock    string
	clockRuns    bool
	checkConfig  bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("tokengate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.configPath, "config", "", "YAML configuration file (default: the embedded default)")
	fs.StringVar(&o.listen, "listen", "", "ext_proc gRPC address, overriding the config's listen")
	fs.StringVar(&o.adminListen, "admin-listen", "", "admin HTTP address, overriding the config's admin_listen")
	fs.StringVar(&o.logFormat, "log-format", "json", "log format: json or console")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 15*time.Second, "how long open streams may finish on shutdown")
	fs.DurationVar(&o.drainDelay, "drain-delay", 0, "on shutdown, how long to keep accepting requests while health says NOT_SERVING, so Envoy's health checks move traffic away first")
	fs.BoolVar(&o.checkConfig, "check-config", false, "validate the configuration (--config, or the embedded default), print its warnings and exit: 0 when valid, 2 when not")
	fs.StringVar(&o.fakeClock, "fake-clock", "", "TESTS ONLY: run the limiter on a clock starting at this RFC 3339 time, moved by POST /debug/clock?advance=D on the admin port")
	fs.BoolVar(&o.clockRuns, "fake-clock-runs", false, "TESTS ONLY: the --fake-clock also runs with real time")
	if err := fs.Parse(args); err != nil {
		return o, usageError(err)
	}
	if fs.NArg() > 0 {
		return o, usageError(fmt.Errorf("unexpected arguments %v", fs.Args()))
	}
	return o, nil
}

// Run starts tokengate and serves until ctx is cancelled, then drains,
// flushes the store and returns nil.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "admin" {
		return runAdmin(ctx, args[1:], stdout, stderr)
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	cfg, pols, err := loadConfig(o.configPath)
	if err != nil {
		return usageError(err)
	}
	if o.listen != "" {
		cfg.Listen = o.listen
	}
	if o.adminListen != "" {
		cfg.AdminListen = o.adminListen
	}
	if o.checkConfig {
		return checkConfig(cfg, o.configPath, stdout, stderr)
	}
	log, err := newLogger(o.logFormat, o.logLevel, stderr)
	if err != nil {
		return usageError(err)
	}
	defer func() { _ = log.Sync() }()
	logWarnings(log, "", cfg)

	var clock limiter.Clock = limiter.SystemClock{}
	var manual *limiter.ManualClock
	if o.fakeClock != "" {
		t, err := time.Parse(time.RFC3339Nano, o.fakeClock)
		if err != nil {
			return usageError(fmt.Errorf("--fake-clock: %w", err))
		}
		manual = limiter.NewManualClock(t)
		if o.clockRuns {
			manual = limiter.NewRunningClock(t)
		}
		clock = manual
	}

	reg := prometheus.NewRegistry()
	metrics, procMetrics := registerMetrics(reg)
	hs := health.NewServer()

	store, err := openStore(cfg.Store, clock, storeHooks{log: log, metrics: metrics, health: hs})
	if err != nil {
		return err
	}
	storeClosed := false
	defer func() {
		if !storeClosed {
			_ = store.Close()
		}
	}()

	// Load the vocabularies before serving, not inside the first request's
	// ext_proc reply, which Envoy times out (200 ms by default): ready means
	// ready to estimate.
	if err := tokenize.Preload(tokenize.O200kBase, tokenize.Cl100kBase); err != nil {
		return fmt.Errorf("loading tokenizer vocabularies: %w", err)
	}

	grpcLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		grpcLn.Close()
		return fmt.Errorf("admin listen %s: %w", cfg.AdminListen, err)
	}

	serverOpts := []grpc.ServerOption{grpc.MaxRecvMsgSize(cfg.MaxReceiveBytes),
		grpc.ChainStreamInterceptor(recoverStream(metrics, log)), grpc.ChainUnaryInterceptor(recoverUnary(metrics, log))}
	if cfg.TLS.Enabled() {
		creds, err := serverTLS(cfg.TLS)
		if err != nil {
			grpcLn.Close()
			adminLn.Close()
			return usageError(err)
		}
		serverOpts = append(serverOpts, grpc.Creds(creds))
	}
	srv := grpc.NewServer(serverOpts...)
	proc := extproc.New(extproc.Options{Policies: pols, Store: store, Clock: clock, Log: log, Metrics: procMetrics, StoreErrors: metrics.storeError,
		EstimateBudget: cfg.EstimateBudget, KeySalt: []byte(os.Getenv(cfg.KeySaltEnv)), MaxDecoded: int64(cfg.MaxReceiveBytes)})
	extprocv3.RegisterExternalProcessorServer(srv, proc)
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)

	adminRPC := grpc.NewServer(grpc.ChainUnaryInterceptor(recoverUnary(metrics, log), bearerAuth(adminToken(cfg.Admin))))
	adminv1.RegisterAdminServiceServer(adminRPC, &adminService{proc: proc, store: store, clock: clock})
	reflection.Register(adminRPC)
	admin := &http.Server{Handler: withGRPC(adminRPC, adminMux(hs, reg, manual)), ReadHeaderTimeout: 5 * time.Second}

	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(grpcLn) }()
	go func() {
		if err := admin.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin server: %w", err)
		}
	}()
	log.Info("serving", zap.String("grpc", grpcLn.Addr().String()), zap.String("admin", adminLn.Addr().String()),
		zap.String("store", cfg.Store.Backend), zap.Int("policies", len(cfg.Policies)))
	// SIGHUP is caught before "ready" is printed: a reload sent the moment
	// a supervisor reads it must not be lost (or kill the process).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	fmt.Fprintf(stdout, "tokengate ready grpc=%s admin=%s\n", grpcLn.Addr(), adminLn.Addr())
	var serveErr error
serve:
	for {
		select {
		case <-ctx.Done():
			break serve
		case serveErr = <-errc:
			break serve
		case <-hup:
			reload(o.configPath, proc, metrics, log)
		}
	}

	log.Info("shutting down: draining open streams", zap.Duration("drain_delay", o.drainDelay), zap.Duration("drain_timeout", o.drainTimeout))
	hs.Shutdown() // NOT_SERVING, so Envoy's health check moves traffic away first
	if o.drainDelay > 0 {
		time.Sleep(o.drainDelay) // still serving, for the health checks to notice
	}
	drain(srv, o.drainTimeout)
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = admin.Shutdown(shutCtx)
	cancel()
	adminRPC.Stop()
	storeClosed = true
	if err := store.Close(); err != nil {
		return fmt.Errorf("closing store: %w", err)
	}
	log.Info("stopped")
	return serveErr
}

// loadConfig reads the file at path ("": the embedded default) and
// compiles its policies.
func loadConfig(path string) (*config.Config, []*policy.Policy, error) {
	cfg := config.Default()
	if path != "" {
		var err error
		if cfg, err = config.Load(path); err != nil {
			return nil, nil, err
		}
	}
	pols, err := policy.CompileAll(cfg.Policies, cfg.Prices)
	if err != nil {
		return nil, nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, pols, nil
}

// checkConfig is --check-config: the configuration loaded (an invalid one
// never gets here: it exits 2), it prints one "warning:" line per warning
// on stderr and a summary on stdout. Warnings do not change the exit code.
func checkConfig(cfg *config.Config, path string, stdout, stderr io.Writer) error {
	warnings := cfg.Warnings()
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if path == "" {
		path = "the embedded default"
	}
	fmt.Fprintf(stdout, "config ok: %s (policies: %d, warnings: %d)\n", path, len(cfg.Policies), len(warnings))
	return nil
}

// logWarnings logs the configuration's warnings, at start and on reload
// (prefix "SIGHUP: ").
func logWarnings(log *zap.Logger, prefix string, cfg *config.Config) {
	for _, w := range cfg.Warnings() {
		log.Warn(prefix+"config warning", zap.String("warning", w))
	}
}

// drain lets open streams finish, up to timeout, then cuts them.
func drain(srv *grpc.Server, timeout time.Duration) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		srv.Stop()
		<-done
	}
}
