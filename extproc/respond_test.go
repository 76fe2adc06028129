package extproc

import (
	"fmt"
	"strings"
	"testing"
)

// Each name is sent once, the first value wins, and values keep their
// bytes while the shared buffer grows under them.
func TestHeaderSet(t *testing.T) {
	var h headerSet
	h.set("retry-after", "1")
	h.setInt("retry-after", 2) // a policy's custom name equal to a standard one
	h.set("", "nameless")
	want := map[string]string{"retry-after": "1"}
	for i := range 20 {
		name, value := fmt.Sprintf("x-h%d", i), strings.Repeat(fmt.Sprint(i%10), 30)
		if i%2 == 0 {
			h.setInt(name, int64(i)*1000003)
			value = fmt.Sprint(int64(i) * 1000003)
		} else {
			h.set(name, value)
		}
		want[name] = value
	}
	got := map[string]string{}
	for _, o := range h.mutation().GetSetHeaders() {
		if _, dup := got[o.GetHeader().GetKey()]; dup {
			t.Errorf("%s sent twice", o.GetHeader().GetKey())
		}
		got[o.GetHeader().GetKey()] = string(o.GetHeader().GetRawValue())
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("headers\n got %v\nwant %v", got, want)
	}
}
