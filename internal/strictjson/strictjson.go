// Package strictjson decodes JSON that podvnet wrote or that talks to the
// agent, refusing anything but exactly one object of the expected shape.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Decode reads exactly one JSON value into v and refuses unknown fields and
// trailing data: a typo in a field name is an error, never a silently
// ignored value, and neither is a second document after the first.
func Decode(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return fmt.Errorf("after the JSON object: %w", err)
		}
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// Unmarshal is Decode of a byte slice.
func Unmarshal(b []byte, v any) error { return Decode(bytes.NewReader(b), v) }
