package server

import (
	"go.uber.org/zap"

	"github.com/tokengate/tokengate/extproc"
)

// reload re-reads the config file on SIGHUP. Policies change for requests
// that start afterwards, counters are kept; a file that does not pass
// validation is refused and the running config stays. Listeners, TLS and
// the store are fixed at start: changing them takes a restart, and a
// reload that changes them says so.
func reload(path string, proc *extproc.Server, m *metrics, log *zap.Logger) {
	if path == "" {
		log.Warn("SIGHUP: running on the embedded default, nothing to reload")
		m.reload(false)
		return
	}
	cfg, pols, err := loadConfig(path)
	if err != nil {
		log.Error("SIGHUP: config refused; keeping the running one", zap.Error(err))
		m.reload(false)
		return
	}
	proc.SetPolicies(pols)
	m.reload(true)
	logWarnings(log, "SIGHUP: ", cfg)
	log.Info("SIGHUP: config reloaded; new policies apply to new requests", zap.Int("policies", len(cfg.Policies)),
		zap.String("note", "listen, admin_listen, tls and store changes need a restart"))
}
