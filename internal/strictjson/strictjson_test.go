package strictjson

import (
	"strings"
	"testing"
)

func TestUnmarshal(t *testing.T) {
	type doc struct {
		Name string `json:"name"`
	}
	for _, tt := range []struct {
		in, wantErr string
	}{
		{in: `{"name":"a"}`},
		{in: " {\"name\":\"a\"}\n\t "},
		{in: `{"nmae":"a"}`, wantErr: `unknown field "nmae"`},
		{in: `{"name":"a"}{"name":"b"}`, wantErr: "trailing data"},
		{in: `{"name":"a"}}`, wantErr: "after the JSON object"},
		{in: `{"name":"a"} x`, wantErr: "after the JSON object"},
		{in: `{"name":`, wantErr: "unexpected EOF"},
		{in: ``, wantErr: "EOF"},
	} {
		var d doc
		err := Unmarshal([]byte(tt.in), &d)
		switch {
		case tt.wantErr == "" && (err != nil || d.Name != "a"):
			t.Errorf("%q: %+v, %v", tt.in, d, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%q: %v, want an error saying %q", tt.in, err, tt.wantErr)
		}
	}
}
