// Package e2e holds tokengate's end-to-end tests: they build and start the
// real tokengate and openai-mock binaries and send API calls through the
// Envoy-faithful front (package e2e/front), or through a real Envoy when
// ENVOY_BIN names one; prometheus_test.go scrapes a loaded tokengate with
// a real Prometheus (Debian's prometheus package, or PROMETHEUS_BIN).
// Helpers live in e2e/harness.
package e2e
