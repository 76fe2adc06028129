package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// localKey is the subscription key the local lab sends; any value works,
// tokengate only ever keeps its hash.
const localKey = "tokenlab-local"

// localReport is what `tokenlab local` saw, for tests.
type localReport struct {
	results []result
	charged charged
}

// runLocal is `tokenlab local`: the stack on loopback ports, the lab
// through it, then tokengate's own account of what it charged beside the
// table's, and everything stopped again.
func runLocal(ctx context.Context, o options, stdout, stderr io.Writer) (rep localReport, err error) {
	fmt.Fprintln(stderr, "tokenlab local: starting openai-mock, tokengate and the Envoy stand-in (e2e/front, a test double for Envoy) in this process…")
	so := stackOptions{envoyConfig: o.envoyConfig, tokensPerMinute: o.tokensPerMinute}
	keyedBy := o.api.keySource + " (the policy names no header: each API's own)"
	if o.keyHeaderSet {
		so.keyHeader, keyedBy = o.keyHeader, o.keyHeader
	}
	s, err := startStack(ctx, so)
	if err != nil {
		return rep, err
	}
	defer func() {
		if cerr := s.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("stopping the stack: %w", cerr))
		}
	}()
	fmt.Fprintf(stdout, "local stack (--api %s): Envoy stand-in %s → tokengate %s (policy %q: %d tokens/min per key from %s, bbolt %s) → openai-mock %s\n",
		o.api.name, s.url, s.gate.fields["grpc"], labPolicy, o.tokensPerMinute, keyedBy, s.db, s.mock.fields["http"])

	o.url, o.key = s.url, localKey
	var labErr error
	if o.sdk {
		rep.results, labErr = runSDKLab(ctx, o, stdout)
	} else {
		rep.results, labErr = runHTTPLab(ctx, o, stdout, stderr)
	}
	if ctx.Err() != nil {
		return rep, labErr // interrupted: stop the stack without more ado
	}
	if err := s.waitRequests(requestsSent(rep.results)); err != nil {
		return rep, errors.Join(labErr, err)
	}
	if rep.charged, err = scrapeCharged(ctx, s.admin, labPolicy); err != nil {
		return rep, errors.Join(labErr, err)
	}
	fmt.Fprintln(stdout, chargedText(rep.charged))
	cmpErr := compareCharged(rep.results, rep.charged)
	if cmpErr == nil {
		fmt.Fprintln(stdout, "the table's totals and tokengate's charges agree.")
	}
	return rep, errors.Join(labErr, cmpErr)
}

// requestsSent counts HTTP requests, the SDK's retries included.
func requestsSent(results []result) int {
	n := 0
	for _, r := range results {
		n += max(1, len(r.Attempts))
	}
	return n
}

func chargedText(c charged) string {
	decisions := make([]string, 0, len(c.Decisions))
	for d, n := range c.Decisions {
		decisions = append(decisions, fmt.Sprintf("%s %d", d, n))
	}
	sort.Strings(decisions)
	return fmt.Sprintf("tokengate charged (its /metrics, policy %s): prompt %d, completion %d, total %d tokens; decisions: %s",
		labPolicy, c.Prompt, c.Completion, c.total(), strings.Join(decisions, ", "))
}

// compareCharged checks the two accounts: the usage the answers reported
// (the table's totals) and what tokengate charged. They must be equal.
func compareCharged(results []result, c charged) error {
	var u usage
	for _, r := range results {
		u.Prompt += r.Prompt
		u.Completion += r.Completion
	}
	if u.Prompt != c.Prompt || u.Completion != c.Completion {
		return fmt.Errorf("the answers reported prompt %d + completion %d tokens, tokengate charged prompt %d + completion %d",
			u.Prompt, u.Completion, c.Prompt, c.Completion)
	}
	return nil
}
