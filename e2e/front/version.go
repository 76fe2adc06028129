package front

import (
	"fmt"
	"regexp"
	"strconv"
)

// EnvoyVersion selects the Envoy release line the front imitates where
// the ext_proc filter changed between releases (see ENVOY.md): whether
// messages carry metadata_context and attributes, whether a local reply of
// the router (503 when the upstream cannot be reached or resets before its
// headers, 504 on the route timeout) goes through the processor, whether
// the first message carries protocol_config, and when the gRPC stream is
// closed.
type EnvoyVersion int

const (
	// EnvoyPinned is the line docker-compose.yaml runs; the zero value.
	EnvoyPinned EnvoyVersion = iota
	// Envoy129 is every release up to 1.29: as Envoy133, and
	// metadata_options.forwarding_namespaces, request_attributes and
	// response_attributes are not implemented (accepted and ignored), so
	// no message carries metadata_context or attributes.
	Envoy129
	// Envoy133 is 1.30 to 1.33: local replies are processed like any
	// response, no protocol_config is sent; forwarded dynamic metadata and
	// attributes are (1.30.0 changelog, new_features, ext_proc).
	Envoy133
	// Envoy134 is 1.34 to 1.36: the runtime guard
	// envoy.reloadable_features.skip_ext_proc_on_local_reply (on by
	// default) keeps local replies from the processor, which sees its
	// stream closed after the request phases; protocol_config is sent.
	Envoy134
	// Envoy137 is 1.37 and later: local replies reach the processor again
	// (envoyproxy/envoy PR 41769), and the stream is closed as soon as the
	// last reply needed is in (ext_proc_stream_close_optimization).
	Envoy137
)

// PinnedEnvoy is the line of docker-compose.yaml's image
// (envoyproxy/envoy:v1.36.4); a test checks that the two agree.
const PinnedEnvoy = Envoy134

// Resolve maps EnvoyPinned to the line it stands for.
func (v EnvoyVersion) Resolve() EnvoyVersion {
	if v == EnvoyPinned {
		return PinnedEnvoy
	}
	return v
}

func (v EnvoyVersion) String() string {
	switch v {
	case EnvoyPinned:
		return "pinned (" + PinnedEnvoy.String() + ")"
	case Envoy129:
		return "≤1.29"
	case Envoy133:
		return "1.30–1.33"
	case Envoy134:
		return "1.34–1.36"
	case Envoy137:
		return "≥1.37"
	}
	return fmt.Sprintf("EnvoyVersion(%d)", int(v))
}

// EnvoyVersions lists the lines the front can imitate, oldest first.
var EnvoyVersions = []EnvoyVersion{Envoy129, Envoy133, Envoy134, Envoy137}

// LocalRepliesReachProcessor reports whether the router's local replies go
// through the ext_proc response phases.
func (v EnvoyVersion) LocalRepliesReachProcessor() bool { return v.Resolve() != Envoy134 }

// SendsProtocolConfig reports whether the first ProcessingRequest of a
// stream carries protocol_config (envoyproxy/envoy PR 38755, in 1.34).
func (v EnvoyVersion) SendsProtocolConfig() bool {
	r := v.Resolve()
	return r != Envoy129 && r != Envoy133
}

// ForwardsMetadataAndAttributes reports whether messages carry
// metadata_context (metadata_options.forwarding_namespaces) and the first
// of each direction attributes (request_attributes, response_attributes):
// implemented in 1.30.0; older releases accept the settings and ignore
// them.
func (v EnvoyVersion) ForwardsMetadataAndAttributes() bool { return v.Resolve() != Envoy129 }

// closesAfterLastReply reports whether the stream is closed (half-close
// and reset) as soon as no further message will be sent, rather than when
// the HTTP stream is destroyed.
func (v EnvoyVersion) closesAfterLastReply() bool { return v.Resolve() == Envoy137 }

var envoyVersionRE = regexp.MustCompile(`(?:^|[^0-9.])1\.(\d+)\.(\d+)(?:[^0-9.]|$)`)

// ParseEnvoyVersion finds a 1.x.y release number in s (a docker image tag
// like "v1.36.4", or `envoy --version` output like
// "envoy  0a1b.../1.36.4/Clean/RELEASE/BoringSSL") and returns its line.
func ParseEnvoyVersion(s string) (EnvoyVersion, string, error) {
	m := envoyVersionRE.FindStringSubmatch(s)
	if m == nil {
		return 0, "", fmt.Errorf("front: no Envoy 1.x.y version in %q", s)
	}
	minor, _ := strconv.Atoi(m[1])
	release := "1." + m[1] + "." + m[2]
	switch {
	case minor <= 29:
		return Envoy129, release, nil
	case minor <= 33:
		return Envoy133, release, nil
	case minor <= 36:
		return Envoy134, release, nil
	}
	return Envoy137, release, nil
}
