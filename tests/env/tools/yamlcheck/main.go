// Command yamlcheck reads YAML documents the way Kubernetes' Go tooling does and
// says whether each one means the object it was written from.
//
// Input (stdin): JSON lines, one document each:
//
//	{"id": "name for the report", "yaml": "the YAML text", "json": <the object>}
//
// Every document is read by each reader below and the result compared with
// "json": same maps, lists, strings, bools and nulls; numbers compared by
// value (exact, as decimals), so 2.0 and 2 are equal but a string "2" and the
// number 2 are not.
//
//   - sigs.k8s.io/yaml YAMLToJSON (go-yaml v2, YAML 1.1: yes/on/0123/1e3
//     resolve as bools and numbers): what kubectl, client-go and the Flux
//     controllers use to read manifests.
//   - go.yaml.in/yaml/v3 Unmarshal into interface{} (YAML 1.2-ish: 0o17 is a
//     number): what kustomize's kyaml (kubectl -k, Flux's kustomize-controller)
//     parses with.
//
// Output (stdout): one block per mismatch, then the line
// "yamlcheck: N documents, M mismatches". Exit status 0 when M is 0, 1 when
// not, 2 when the input cannot be read.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"os"
	"reflect"
	"sort"
	"strconv"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

type document struct {
	ID   string          `json:"id"`
	YAML *string         `json:"yaml"`
	JSON json.RawMessage `json:"json"`
}

type reader struct {
	name string
	read func([]byte) (interface{}, error)
}

var readers = []reader{
	{"sigs.k8s.io/yaml", readSigs},
	{"go.yaml.in/yaml/v3", readV3},
}

func main() {
	if len(os.Args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: yamlcheck < documents.jsonl (see the source for the format)")
		os.Exit(2)
	}
	in := bufio.NewReader(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	count, mismatches := 0, 0
	for line := 1; ; line++ {
		raw, err := in.ReadBytes('\n')
		if len(bytes.TrimSpace(raw)) > 0 {
			var doc document
			if e := json.Unmarshal(raw, &doc); e != nil || doc.YAML == nil || len(doc.JSON) == 0 {
				fail(out, "line %d: not a {\"id\", \"yaml\", \"json\"} object: %v", line, e)
			}
			want, e := decodeJSON(doc.JSON)
			if e != nil {
				fail(out, "line %d (%s): json: %v", line, doc.ID, e)
			}
			count++
			for _, r := range readers {
				got, e := r.read([]byte(*doc.YAML))
				var why string
				if e != nil {
					why = "read error: " + e.Error()
				} else {
					why = diff("$", want, got)
				}
				if why != "" {
					mismatches++
					fmt.Fprintf(out, "MISMATCH %s [%s]: %s\n  yaml: %s\n  want: %s\n  got:  %s\n",
						doc.ID, r.name, why, clip(strconv.Quote(*doc.YAML)), clip(show(want)), clip(show(got)))
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			fail(out, "reading stdin: %v", err)
		}
	}
	fmt.Fprintf(out, "yamlcheck: %d documents, %d mismatches\n", count, mismatches)
	out.Flush()
	if mismatches > 0 {
		os.Exit(1)
	}
}

func fail(out *bufio.Writer, format string, args ...interface{}) {
	out.Flush()
	fmt.Fprintf(os.Stderr, "yamlcheck: "+format+"\n", args...)
	os.Exit(2)
}

// decodeJSON keeps numbers as their decimal text.
func decodeJSON(b []byte) (interface{}, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v interface{}
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("trailing data after the value")
	}
	return v, nil
}

// readSigs is kubectl's reading: YAML to JSON, then that JSON.
func readSigs(y []byte) (interface{}, error) {
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		return nil, err
	}
	return decodeJSON(j)
}

// readV3 decodes into interface{} and turns the result into decodeJSON's types;
// anything JSON cannot hold (a non-string key, a timestamp, .inf) is an error.
func readV3(y []byte) (interface{}, error) {
	var v interface{}
	if err := yamlv3.Unmarshal(y, &v); err != nil {
		return nil, err
	}
	return jsonish(v)
}

func jsonish(v interface{}) (interface{}, error) {
	switch t := v.(type) {
	case nil, bool, string:
		return t, nil
	case int:
		return json.Number(strconv.Itoa(t)), nil
	case int64:
		return json.Number(strconv.FormatInt(t, 10)), nil
	case uint64:
		return json.Number(strconv.FormatUint(t, 10)), nil
	case float64:
		b, err := json.Marshal(t) // fails on NaN and infinities
		return json.Number(b), err
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, item := range t {
			var err error
			if out[i], err = jsonish(item); err != nil {
				return nil, err
			}
		}
		return out, nil
	case map[string]interface{}:
		out := make(map[string]interface{}, len(t))
		for k, item := range t {
			var err error
			if out[k], err = jsonish(item); err != nil {
				return nil, err
			}
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%T %v has no JSON form", v, v)
	}
}

// diff returns "" when want and got are the same JSON value, else where and how they differ.
func diff(path string, want, got interface{}) string {
	switch w := want.(type) {
	case map[string]interface{}:
		g, ok := got.(map[string]interface{})
		if !ok {
			return fmt.Sprintf("%s: want a map, got %s", path, kind(got))
		}
		for _, k := range sortedKeys(w, g) {
			wv, inW := w[k]
			gv, inG := g[k]
			p := path + "[" + strconv.Quote(k) + "]"
			switch {
			case !inG:
				return p + ": missing"
			case !inW:
				return p + ": unexpected key"
			}
			if d := diff(p, wv, gv); d != "" {
				return d
			}
		}
		return ""
	case []interface{}:
		g, ok := got.([]interface{})
		if !ok {
			return fmt.Sprintf("%s: want a list, got %s", path, kind(got))
		}
		if len(w) != len(g) {
			return fmt.Sprintf("%s: want %d items, got %d", path, len(w), len(g))
		}
		for i := range w {
			if d := diff(fmt.Sprintf("%s[%d]", path, i), w[i], g[i]); d != "" {
				return d
			}
		}
		return ""
	case json.Number:
		g, ok := got.(json.Number)
		if !ok {
			return fmt.Sprintf("%s: want the number %s, got %s", path, w, kind(got))
		}
		wr, ok1 := new(big.Rat).SetString(string(w))
		gr, ok2 := new(big.Rat).SetString(string(g))
		if !ok1 || !ok2 || wr.Cmp(gr) != 0 {
			return fmt.Sprintf("%s: want the number %s, got the number %s", path, w, g)
		}
		return ""
	default: // string, bool, nil
		if reflect.TypeOf(want) != reflect.TypeOf(got) || want != got {
			return fmt.Sprintf("%s: want %s, got %s", path, kind(want), kind(got))
		}
		return ""
	}
}

func sortedKeys(a, b map[string]interface{}) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// kind names a value with its type, so "true" the string and true the bool differ in the report.
func kind(v interface{}) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case string:
		return "the string " + clip(strconv.Quote(t))
	case bool:
		return fmt.Sprintf("the bool %v", t)
	case json.Number:
		return "the number " + string(t)
	case map[string]interface{}:
		return "a map"
	case []interface{}:
		return "a list"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func show(v interface{}) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}

// clip keeps reports of 1 MiB documents readable.
func clip(s string) string {
	const max = 400
	if len(s) <= max {
		return s
	}
	return s[:max] + fmt.Sprintf("… (%d bytes)", len(s))
}
