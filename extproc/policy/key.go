package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Counter keys are policy:hash[:model]. This file owns the format both
// ways; policy names cannot hold ':' (Compile refuses them), so a
// policy's prefix is its own.

// CounterKey names the budget a key draws on under the policy: the
// policy, the key's hash and, for per_model policies, the model.
func (p *Policy) CounterKey(keyHash, model string) string {
	k := p.KeyPrefix() + keyHash
	if p.perModel {
		k += ":" + modelKey(model)
	}
	return k
}

// maxModelKey bounds the model part of a counter key: model names are
// the client's to write, and a key is kept in memory, in Redis and on
// disk. Longer names (no real model has one) are known by their hash.
const maxModelKey = 128

func modelKey(model string) string {
	model = strings.ToLower(model)
	if len(model) <= maxModelKey {
		return model
	}
	sum := sha256.Sum256([]byte(model))
	return "sha256-" + hex.EncodeToString(sum[:])
}

// KeyPrefix starts every counter key of the policy.
func (p *Policy) KeyPrefix() string { return p.name + ":" }

// ParseCounterKey reads back a counter key of the policy: the key's hash,
// and the model for per_model policies; ok is false for another policy's.
func (p *Policy) ParseCounterKey(key string) (keyHash, model string, ok bool) {
	rest, ok := strings.CutPrefix(key, p.KeyPrefix())
	if !ok {
		return "", "", false
	}
	keyHash, model, _ = strings.Cut(rest, ":")
	return keyHash, model, keyHash != ""
}
