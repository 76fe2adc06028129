// Package deploy holds what runs tokengate outside a Go toolchain: the demo
// stack's tokengate configuration (tokengate.yaml, used by the repository's
// docker-compose.yaml and baked into its Dockerfile's image) and the tests
// that check the Dockerfile, .dockerignore and docker-compose.yaml without a
// Docker engine. httpcheck is the HTTP health probe the demo images carry.
package deploy
