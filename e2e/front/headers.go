package front

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// header is one entry of a headerMap. Keys are lower case, as Envoy keeps
// them, so a processor matching "Content-Type" exactly would fail here as it
// would behind Envoy.
type header struct{ key, value string }

// headerMap is an ordered multimap like Envoy's HeaderMap: repeated headers
// stay separate entries, and pseudo-headers (":path", ":status") live in the
// same map as the rest.
type headerMap struct{ entries []header }

func (h *headerMap) get(key string) (string, bool) {
	for _, e := range h.entries {
		if e.key == key {
			return e.value, true
		}
	}
	return "", false
}

// values returns every value of key, in order.
func (h *headerMap) values(key string) []string {
	var out []string
	for _, e := range h.entries {
		if e.key == key {
			out = append(out, e.value)
		}
	}
	return out
}

func (h *headerMap) has(key string) bool {
	_, ok := h.get(key)
	return ok
}

func (h *headerMap) add(key, value string) {
	h.entries = append(h.entries, header{key, value})
}

// set replaces every entry of key by one, kept where the first one was so
// that the order seen by the next processor stays stable.
func (h *headerMap) set(key, value string) {
	out := h.entries[:0]
	done := false
	for _, e := range h.entries {
		if e.key != key {
			out = append(out, e)
			continue
		}
		if !done {
			out = append(out, header{key, value})
			done = true
		}
	}
	h.entries = out
	if !done {
		h.add(key, value)
	}
}

func (h *headerMap) del(key string) {
	out := h.entries[:0]
	for _, e := range h.entries {
		if e.key != key {
			out = append(out, e)
		}
	}
	h.entries = out
}

// headerMapOf builds a map from an http.Header, keys lower-cased and in
// order, as Envoy holds trailers.
func headerMapOf(hh http.Header) headerMap {
	var h headerMap
	keys := make([]string, 0, len(hh))
	for k := range hh {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range hh[k] {
			h.add(strings.ToLower(k), v)
		}
	}
	return h
}

// header converts the map back, pseudo-headers left out.
func (h *headerMap) header() http.Header {
	out := http.Header{}
	for _, e := range h.entries {
		if !strings.HasPrefix(e.key, ":") {
			out.Add(e.key, e.value)
		}
	}
	return out
}

// proto encodes the map as current Envoy does: values in raw_value (the
// runtime guard envoy.reloadable_features.send_header_raw_value is on by
// default), never in value.
func (h *headerMap) proto() *corev3.HeaderMap {
	m := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, 0, len(h.entries))}
	for _, e := range h.entries {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: e.key, RawValue: []byte(e.value)})
	}
	return m
}

// checker decides which header mutations a processor may make, following
// Envoy's HeaderMutationRules: by default everything but the routing
// headers and x-envoy-*.
type checker struct {
	allow, disallow *regexp.Regexp
	disallowIsError bool
	allowAllRouting bool
	allowEnvoy      bool
	disallowSystem  bool
	disallowAll     bool
}

func newChecker(r *mutationrulesv3.HeaderMutationRules) (*checker, error) {
	c := &checker{}
	if r == nil {
		return c, nil
	}
	c.disallowIsError = r.GetDisallowIsError().GetValue()
	c.allowAllRouting = r.GetAllowAllRouting().GetValue()
	c.allowEnvoy = r.GetAllowEnvoy().GetValue()
	c.disallowSystem = r.GetDisallowSystem().GetValue()
	c.disallowAll = r.GetDisallowAll().GetValue()
	var err error
	if e := r.GetAllowExpression(); e != nil {
		// Envoy matches the whole name (RE2 full match).
		if c.allow, err = regexp.Compile("^(?:" + e.GetRegex() + ")$"); err != nil {
			return nil, fmt.Errorf("mutation_rules.allow_expression: %w", err)
		}
	}
	if e := r.GetDisallowExpression(); e != nil {
		if c.disallow, err = regexp.Compile("^(?:" + e.GetRegex() + ")$"); err != nil {
			return nil, fmt.Errorf("mutation_rules.disallow_expression: %w", err)
		}
	}
	return c, nil
}

// routingHeaders may not be changed unless allow_all_routing is set:
// Envoy has already routed on them.
var routingHeaders = map[string]bool{"host": true, ":authority": true, ":method": true, ":scheme": true}

func (c *checker) allowed(name string) bool {
	switch {
	case c.disallow != nil && c.disallow.MatchString(name):
		return false
	case c.allow != nil && c.allow.MatchString(name):
		return true
	case c.disallowAll:
		return false
	case !c.allowAllRouting && routingHeaders[name]:
		return false
	case c.disallowSystem && strings.HasPrefix(name, ":"):
		return false
	case !c.allowEnvoy && strings.HasPrefix(name, "x-envoy"):
		return false
	}
	return true
}

// errMutation marks a mutation Envoy refuses outright; the request then
// ends with a local reply carrying status_on_error (500 by default).
var errMutation = errors.New("invalid header mutation")

// verdict reports whether a mutation of name goes ahead. A disallowed one
// is skipped and counted, or is an error when disallow_is_error is set.
func (c *checker) verdict(name string, st *RequestStats) (bool, error) {
	if c.allowed(name) {
		return true, nil
	}
	st.RejectedMutations++
	if c.disallowIsError {
		return false, fmt.Errorf("%w: invalid attempt to modify %s", errMutation, name)
	}
	return false, nil
}

// applyMutation applies m to h the way Envoy's MutationUtils does. When
// dropContentLength is set (streamed bodies) content-length is never set,
// since its value could not be kept true.
func (c *checker) applyMutation(h *headerMap, m *extprocsvc.HeaderMutation, dropContentLength bool, st *RequestStats) error {
	for _, name := range m.GetRemoveHeaders() {
		if !validName(name) {
			return fmt.Errorf("%w: invalid character in remove_headers", errMutation)
		}
		name = strings.ToLower(name)
		// System headers and host can never be removed, whatever the rules.
		if strings.HasPrefix(name, ":") || name == "host" {
			st.RejectedMutations++
			continue
		}
		ok, err := c.verdict(name, st)
		if err != nil {
			return err
		}
		if ok {
			h.del(name)
		}
	}
	for _, opt := range m.GetSetHeaders() {
		hv := opt.GetHeader()
		if hv == nil {
			continue
		}
		name := strings.ToLower(hv.GetKey())
		if dropContentLength && name == "content-length" {
			continue
		}
		if hv.GetValue() != "" && len(hv.GetRawValue()) > 0 {
			return fmt.Errorf("%w: only one of value or raw_value may be set (%s)", errMutation, name)
		}
		value := string(hv.GetRawValue())
		if len(hv.GetRawValue()) == 0 && hv.GetValue() != "" {
			// Current Envoy reads raw_value only; counted so a test can
			// insist that a processor uses raw_value.
			value = hv.GetValue()
			st.ValueFieldHeaders++
		}
		if !validName(hv.GetKey()) || !validValue(value) {
			return fmt.Errorf("%w: invalid character in set_headers (%s)", errMutation, name)
		}
		if name == ":status" && !validStatus(value) {
			st.RejectedMutations++
			continue
		}
		ok, err := c.verdict(name, st)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		applySet(h, name, value, opt, st)
	}
	return nil
}

// applySet follows Envoy's ext_proc, which reads only the deprecated
// append flag (false when unset: the value replaces any existing one) and
// ignores append_action (envoyproxy/envoy issue 36982; the pull requests
// that would honour it, 29862, 37139 and 39066, were closed unmerged). An
// ADD_IF_ABSENT or OVERWRITE_IF_EXISTS is therefore an overwrite-or-add,
// and is counted so a test can insist that a processor does not rely on
// it.
func applySet(h *headerMap, name, value string, opt *corev3.HeaderValueOption, st *RequestStats) {
	switch opt.GetAppendAction() {
	case corev3.HeaderValueOption_ADD_IF_ABSENT, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
		st.IgnoredAppendActions++
	}
	if opt.GetAppend().GetValue() {
		h.add(name, value)
		return
	}
	h.set(name, value)
}

// validName accepts RFC 9110 tokens, with a leading ':' for pseudo-headers.
func validName(s string) bool {
	s = strings.TrimPrefix(s, ":")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validValue rejects what would split or truncate a header line.
func validValue(s string) bool {
	return !strings.ContainsAny(s, "\r\n\x00")
}

func validStatus(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 200 && n <= 999
}
