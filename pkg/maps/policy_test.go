package maps

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// TestPortSetKeys: a port range becomes the fewest trie prefixes that cover
// it exactly, and reads back as the same range.
func TestPortSetKeys(t *testing.T) {
	tests := []struct {
		r    PortRange
		want []string // port/prefix bits
	}{
		{PortRange{}, []string{"any"}},
		{PortRange{Proto: 6, First: 0, Last: 65535}, []string{"0/0"}},
		{PortRange{Proto: 6, First: 80, Last: 80}, []string{"80/16"}},
		{PortRange{Proto: 17, First: 80, Last: 81}, []string{"80/15"}},
		{PortRange{Proto: 6, First: 8000, Last: 8010}, []string{"8000/13", "8008/15", "8010/16"}},
		{PortRange{Proto: 6, First: 1, Last: 65535}, []string{"1/16", "2/15", "4/14", "8/13", "16/12", "32/11", "64/10", "128/9",
			"256/8", "512/7", "1024/6", "2048/5", "4096/4", "8192/3", "16384/2", "32768/1"}},
	}
	for _, tt := range tests {
		t.Run(tt.r.String(), func(t *testing.T) {
			keys := PortSetKeys(7, []PortRange{tt.r})
			var got []string
			for _, k := range keys {
				if k.Set != 7 || k.Proto != tt.r.Proto {
					t.Errorf("key %+v: set or protocol wrong", k)
				}
				if k.Prefixlen == 32 {
					got = append(got, "any")
					continue
				}
				got = append(got, fmt.Sprintf("%d/%d", binary.BigEndian.Uint16(k.Port[:]), k.Prefixlen-48))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("prefixes %v, want %v", got, tt.want)
			}
			var back []PortRange
			for _, k := range keys {
				back = appendRange(back, k.portRange())
			}
			if len(back) != 1 || back[0] != tt.r {
				t.Errorf("reads back as %v", back)
			}
		})
	}
}
