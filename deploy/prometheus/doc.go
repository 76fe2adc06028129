// Package prometheus holds tokengate's Prometheus alerting rules
// (alerts.yaml, README's runbook as rules) and their promtool unit tests
// (alerts_test.yaml). Its Go tests run `promtool check rules` and
// `promtool test rules` on them, check every metric and label the rules
// name against what tokengate exports, and make sure a misspelt rule
// fails. Debian's prometheus package provides promtool; .ci/run installs
// it.
package prometheus
