package policy

import "strings"

// Counter keys are policy:hash[:model]. This file owns the format both
// ways; policy names cannot hold ':' (Compile refuses them), so a
// policy's prefix is its own.

// CounterKey names the budget a key draws on under the policy: the
// policy, the key's hash and, for per_model policies, the model.
func (p *Policy) CounterKey(keyHash, model string) string {
	k := p.KeyPrefix() + keyHash
	if p.perModel {
		k += ":" + strings.ToLower(model)
	}
	return k
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
