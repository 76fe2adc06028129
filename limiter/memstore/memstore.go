// Package memstore is the limiter.Store that keeps every counter in this
// process's memory, for a single replica.
package memstore

import (
	"context"
	"time"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/internal/memcore"
)

// Store keeps every window and quota in this process. Keys are spread over
// shards, each one a mutex and a map, so that every call on a key takes
// exactly one lock; nothing waits, so contexts are ignored and
// no call fails. Holds last until settled: they have no TTL, and die with
// the process. Hold IDs are empty: a hold is found again by its key.
//
// Idle keys (nothing charged in the window, nothing reserved, no quota
// running) are forgotten, since a fresh counter answers the same: at once
// when a call leaves a key empty, gradually by a sweep that rides on the
// calls to each shard, and all at once by Sweep.
type Store struct {
	core *memcore.Core
}

var (
	_ limiter.Store     = (*Store)(nil)
	_ limiter.MultiInto = (*Store)(nil)
)

// New returns an empty store.
func New() *Store { return &Store{core: memcore.New(nil)} }

// Reserve implements limiter.Store.
func (m *Store) Reserve(_ context.Context, key string, lim limiter.Limits, n int64, now time.Time) (limiter.Decision, error) {
	return m.core.Reserve(key, lim, n, now), nil
}

// Settle implements limiter.Store.
func (m *Store) Settle(_ context.Context, key string, lim limiter.Limits, h limiter.Hold, used int64, now time.Time) (limiter.Decision, error) {
	return m.core.Settle(key, lim, h, used, now), nil
}

// Status implements limiter.Store.
func (m *Store) Status(_ context.Context, key string, lim limiter.Limits, now time.Time) (limiter.Decision, error) {
	return m.core.Status(key, lim, now), nil
}

// ReserveMany implements limiter.Multi.
func (m *Store) ReserveMany(_ context.Context, key string, b limiter.Budget, n []int64, now time.Time) (limiter.Decisions, error) {
	return m.core.ReserveMany(key, b, n, now)
}

// SettleMany implements limiter.Multi.
func (m *Store) SettleMany(_ context.Context, key string, b limiter.Budget, h limiter.Holds, used []int64, now time.Time) (limiter.Decisions, error) {
	return m.core.SettleMany(key, b, h, used, now)
}

// ReserveManyInto implements limiter.MultiInto.
func (m *Store) ReserveManyInto(_ context.Context, key string, b limiter.Budget, n []int64, now time.Time, d *limiter.Decisions) error {
	return m.core.ReserveManyInto(key, b, n, now, d)
}

// SettleManyInto implements limiter.MultiInto.
func (m *Store) SettleManyInto(_ context.Context, key string, b limiter.Budget, h limiter.Holds, used []int64, now time.Time, d *limiter.Decisions) error {
	return m.core.SettleManyInto(key, b, h, used, now, d)
}

// StatusMany implements limiter.Multi.
func (m *Store) StatusMany(_ context.Context, key string, b limiter.Budget, now time.Time) (limiter.Decisions, error) {
	return m.core.StatusMany(key, b, now)
}

// List implements limiter.Inspector, one shard lock at a time.
func (m *Store) List(_ context.Context, prefix string, now time.Time) ([]limiter.KeyUsage, error) {
	return m.core.List(prefix, now), nil
}

// Reset implements limiter.Inspector.
func (m *Store) Reset(_ context.Context, key string) error {
	m.core.Reset(key)
	return nil
}

// Sweep forgets every key idle at now and returns how many it forgot. The
// store needs no call to it; it is there for callers who want memory back
// at once, and for tests.
func (m *Store) Sweep(now time.Time) int { return m.core.Sweep(now) }

// Len returns how many keys the store holds, idle ones not yet swept
// included.
func (m *Store) Len() int { return m.core.Len() }

// Close implements limiter.Store; there is nothing to release.
func (m *Store) Close() error { return nil }
