// helm-render renders a Helm chart the way `helm template` does, for the deploy tests on a
// machine without Helm (no binary can be downloaded here). It is a stand-in, not Helm:
// `helm lint` and `helm template` themselves were not run.
//
// What it shares with Helm 3 (pkg/engine, pkg/chartutil): Go's text/template with sprig's
// TxtFuncMap minus env/expandenv; Helm's own functions include, tpl, required, fail (sprig's),
// toYaml, fromYaml, fromYamlArray, toJson, fromJson, fromJsonArray, and lookup answering an
// empty map as under `helm template`; missingkey=zero and "<no value>" replaced by ""; every
// template of the chart parsed into one set (so partials are shared), those whose file name
// starts with "_" not rendered; values from values.yaml coalesced with each -f file in order
// and then --set (a null deletes a key), read through the same YAML→JSON path (ghodss/yaml,
// which sigs.k8s.io/yaml forked), so numbers are float64 as in Helm; .Release, .Chart (from
// Chart.yaml), .Capabilities (Kubernetes v1.29.0 unless --kube-version), .Template, .Files.Get;
// Chart.yaml's kubeVersion checked against that version (Masterminds/semver); execution errors cleaned up to Helm's
// "execution error at (file:line:col): message"; NOTES.txt rendered (so its errors count) but
// not printed (--notes prints it alone, as `helm install` would); every output document must
// parse as YAML. Output: each template's documents
// after "---\n# Source: chart/templates/file.yaml".
//
// Not done: subcharts and dependencies, values.schema.json, --set-string/--set-file and list
// indexes in --set, .Files.Glob/AsConfig/AsSecrets, kind-ordering of the output, hooks,
// --strict.
//
// Build (Debian's Go and packaged sources, offline):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o helm-render ./test/deploy/helm-render
//
// Usage: helm-render [--name N] [--namespace NS] [--kube-version vX.Y.Z] [--notes]
//
//	[-f values.yaml]... [--set a.b=c]... CHART_DIR
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"encoding/json"

	"github.com/Masterminds/semver"
	"github.com/Masterminds/sprig"
	"github.com/ghodss/yaml"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// Metadata is Chart.yaml, with the field names templates use (.Chart.Name, .Chart.AppVersion …).
type Metadata struct {
	APIVersion  string            `json:"apiVersion,omitempty"`
	Name        string            `json:"name,omitempty"`
	Version     string            `json:"version,omitempty"`
	AppVersion  string            `json:"appVersion,omitempty"`
	Description string            `json:"description,omitempty"`
	Type        string            `json:"type,omitempty"`
	KubeVersion string            `json:"kubeVersion,omitempty"`
	Home        string            `json:"home,omitempty"`
	Sources     []string          `json:"sources,omitempty"`
	Keywords    []string          `json:"keywords,omitempty"`
	Icon        string            `json:"icon,omitempty"`
	Deprecated  bool              `json:"deprecated,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// VersionSet is .Capabilities.APIVersions.
type VersionSet []string

func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

type KubeVersion struct{ Version, Major, Minor string }

func (k KubeVersion) String() string     { return k.Version }
func (k KubeVersion) GitVersion() string { return k.Version }

type Capabilities struct {
	APIVersions VersionSet
	KubeVersion KubeVersion
	HelmVersion map[string]string
}

// Files is .Files: the chart's files outside templates/.
type Files map[string][]byte

func (f Files) Get(name string) string      { return string(f[name]) }
func (f Files) GetBytes(name string) []byte { return f[name] }

const warnStart, warnEnd = "HELM_ERR_START", "HELM_ERR_END"

func main() {
	var valueFiles, sets multi
	name, namespace, kubeVersion := "release-name", "default", "v1.29.0"
	notes := false
	args := os.Args[1:]
	var chartDir string
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() string {
			if i+1 >= len(args) {
				die(fmt.Errorf("%s needs a value", a))
			}
			i++
			return args[i]
		}
		switch {
		case a == "-f" || a == "--values":
			valueFiles.Set(next())
		case a == "--set":
			sets.Set(next())
		case a == "--name":
			name = next()
		case a == "--namespace" || a == "-n":
			namespace = next()
		case a == "--kube-version":
			kubeVersion = next()
		case a == "--notes":
			notes = true
		case strings.HasPrefix(a, "-"):
			die(fmt.Errorf("unknown flag %s", a))
		default:
			chartDir = a
		}
	}
	if chartDir == "" {
		die(errors.New("usage: helm-render [--name N] [--namespace NS] [-f values.yaml]... [--set a.b=c]... CHART_DIR"))
	}
	out, err := render(chartDir, name, namespace, kubeVersion, valueFiles, sets, notes)
	if err != nil {
		die(err)
	}
	os.Stdout.WriteString(out)
}

func die(err error) {
	fmt.Fprintf(os.Stderr, "Error: %s\n", err)
	os.Exit(1)
}

func readYAMLMap(file string) (map[string]interface{}, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", file, err)
	}
	if m == nil {
		m = map[string]interface{}{}
	}
	return m, nil
}

// coalesce lays src over dst as Helm does with user values: maps merge key by key, anything
// else replaces, a null deletes.
func coalesce(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		sm, sok := v.(map[string]interface{})
		dm, dok := dst[k].(map[string]interface{})
		if sok && dok {
			dst[k] = coalesce(dm, sm)
		} else {
			dst[k] = v
		}
	}
	return dst
}

// parseSet reads one --set argument: comma-separated dotted.key=value pairs (\, escapes a
// comma); values are typed like Helm's strvals: int64, true/false, null, else a string.
func parseSet(s string, into map[string]interface{}) error {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			cur.WriteByte(s[i+1])
			i++
		} else if s[i] == ',' {
			parts = append(parts, cur.String())
			cur.Reset()
		} else {
			cur.WriteByte(s[i])
		}
	}
	parts = append(parts, cur.String())
	for _, p := range parts {
		key, value, ok := strings.Cut(p, "=")
		if !ok || key == "" {
			return fmt.Errorf("--set %q: expected key=value", p)
		}
		var v interface{} = value
		if n, err := strconv.ParseInt(value, 10, 64); err == nil {
			v = n
		} else if value == "true" || value == "false" {
			v = value == "true"
		} else if value == "null" {
			v = nil
		}
		keys := strings.Split(key, ".")
		m := into
		for _, k := range keys[:len(keys)-1] {
			next, ok := m[k].(map[string]interface{})
			if !ok {
				next = map[string]interface{}{}
				m[k] = next
			}
			m = next
		}
		m[keys[len(keys)-1]] = v
	}
	return nil
}

func funcMap() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	extra := template.FuncMap{
		"toYaml": func(v interface{}) string {
			data, err := yaml.Marshal(v)
			if err != nil {
				return ""
			}
			return strings.TrimSuffix(string(data), "\n")
		},
		"fromYaml": func(s string) map[string]interface{} {
			m := map[string]interface{}{}
			if err := yaml.Unmarshal([]byte(s), &m); err != nil {
				m["Error"] = err.Error()
			}
			return m
		},
		"fromYamlArray": func(s string) []interface{} {
			a := []interface{}{}
			if err := yaml.Unmarshal([]byte(s), &a); err != nil {
				a = []interface{}{err.Error()}
			}
			return a
		},
		"toJson": func(v interface{}) string {
			data, err := json.Marshal(v)
			if err != nil {
				return ""
			}
			return string(data)
		},
		"fromJson": func(s string) map[string]interface{} {
			m := map[string]interface{}{}
			if err := json.Unmarshal([]byte(s), &m); err != nil {
				m["Error"] = err.Error()
			}
			return m
		},
		"fromJsonArray": func(s string) []interface{} {
			a := []interface{}{}
			if err := json.Unmarshal([]byte(s), &a); err != nil {
				a = []interface{}{err.Error()}
			}
			return a
		},
		// As under `helm template`: no cluster, so nothing is found.
		"lookup": func(string, string, string, string) (map[string]interface{}, error) {
			return map[string]interface{}{}, nil
		},
		"required": func(warn string, val interface{}) (interface{}, error) {
			if val == nil {
				return val, errors.New(warnStart + warn + warnEnd)
			}
			if s, ok := val.(string); ok && s == "" {
				return val, errors.New(warnStart + warn + warnEnd)
			}
			return val, nil
		},
		"include": func(string, interface{}) string { return "not implemented" },
		"tpl":     func(string, interface{}) interface{} { return "not implemented" },
	}
	for k, v := range extra {
		f[k] = v
	}
	return f
}

func includeFun(t *template.Template, depth map[string]int) func(string, interface{}) (string, error) {
	return func(name string, data interface{}) (string, error) {
		if depth[name] > 1000 {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		depth[name]++
		defer func() { depth[name]-- }()
		var buf strings.Builder
		err := t.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
}

func tplFun(parent *template.Template, depth map[string]int) func(string, interface{}) (string, error) {
	return func(text string, vals interface{}) (string, error) {
		t, err := parent.Clone()
		if err != nil {
			return "", err
		}
		t.Option("missingkey=zero")
		t.Funcs(template.FuncMap{"include": includeFun(t, depth), "tpl": tplFun(t, depth)})
		t, err = t.New(parent.Name()).Parse(text)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %w", text, err)
		}
		var buf strings.Builder
		if err := t.Execute(&buf, vals); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %w", text, err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
}

// cleanupExecError turns text/template's error into Helm's "execution error at (…): message",
// with required's and fail's message unwrapped.
func cleanupExecError(filename string, err error) error {
	var execErr template.ExecError
	if !errors.As(err, &execErr) {
		return err
	}
	tokens := strings.SplitN(err.Error(), ": ", 3)
	if len(tokens) != 3 {
		return fmt.Errorf("execution error at (%s): %s", filename, err)
	}
	location, msg := tokens[1], tokens[2]
	if i, j := strings.Index(msg, warnStart), strings.Index(msg, warnEnd); i >= 0 && j > i {
		msg = msg[i+len(warnStart) : j]
	} else if k := strings.Index(msg, "error calling fail: "); k >= 0 {
		msg = msg[k+len("error calling fail: "):]
	}
	return fmt.Errorf("execution error at (%s): %s", location, msg)
}

var docSplit = regexp.MustCompile(`(?:^|\s*\n)---\s*`)

func render(chartDir, name, namespace, kubeVersion string, valueFiles, sets []string, notes bool) (string, error) {
	var meta Metadata
	raw, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return "", err
	}
	if err := yaml.Unmarshal(raw, &meta); err != nil {
		return "", fmt.Errorf("Chart.yaml: %w", err)
	}
	if meta.Name == "" || meta.Version == "" || meta.APIVersion != "v2" {
		return "", errors.New("Chart.yaml needs apiVersion v2, name and version")
	}
	if meta.KubeVersion != "" {
		c, err := semver.NewConstraint(meta.KubeVersion)
		if err != nil {
			return "", fmt.Errorf("Chart.yaml: kubeVersion %q: %w", meta.KubeVersion, err)
		}
		v, err := semver.NewVersion(kubeVersion)
		if err != nil {
			return "", fmt.Errorf("--kube-version %q: %w", kubeVersion, err)
		}
		if !c.Check(v) {
			return "", fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", meta.KubeVersion, kubeVersion)
		}
	}
	values, err := readYAMLMap(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return "", err
	}
	for _, f := range valueFiles {
		user, err := readYAMLMap(f)
		if err != nil {
			return "", err
		}
		values = coalesce(values, user)
	}
	for _, s := range sets {
		user := map[string]interface{}{}
		if err := parseSet(s, user); err != nil {
			return "", err
		}
		values = coalesce(values, user)
	}

	files := Files{}
	templates := map[string]string{}
	err = filepath.Walk(chartDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		rel = filepath.ToSlash(rel)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.HasPrefix(rel, "templates/") {
			templates[path.Join(meta.Name, rel)] = string(data)
		} else {
			files[rel] = data
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	names := make([]string, 0, len(templates))
	for n := range templates {
		names = append(names, n)
	}
	sort.Strings(names)

	major, minor := "1", "29"
	if parts := strings.Split(strings.TrimPrefix(kubeVersion, "v"), "."); len(parts) >= 2 {
		major, minor = parts[0], parts[1]
	}
	top := map[string]interface{}{
		"Values": values,
		"Release": map[string]interface{}{
			"Name": name, "Namespace": namespace, "Service": "Helm", "Revision": 1, "IsInstall": true, "IsUpgrade": false,
		},
		"Chart": meta,
		"Capabilities": Capabilities{
			KubeVersion: KubeVersion{Version: kubeVersion, Major: major, Minor: minor},
			APIVersions: VersionSet{"v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1", "rbac.authorization.k8s.io/v1", "autoscaling/v2"},
			HelmVersion: map[string]string{"Version": "v3 (helm-render stand-in)"},
		},
		"Files": files,
	}

	t := template.New("gotpl")
	t.Option("missingkey=zero")
	depth := map[string]int{}
	fm := funcMap()
	fm["include"] = includeFun(t, depth)
	fm["tpl"] = tplFun(t, depth)
	t.Funcs(fm)
	for _, n := range names {
		if _, err := t.New(n).Parse(templates[n]); err != nil {
			return "", fmt.Errorf("parse error in %q: %w", n, err)
		}
	}

	// Executed in Helm's order (sortTemplates: deeper paths first, then names in reverse), so
	// the first error is the one Helm would report; printed in name order.
	order := append([]string(nil), names...)
	sort.SliceStable(order, func(i, j int) bool {
		ci, cj := strings.Count(order[i], "/"), strings.Count(order[j], "/")
		if ci != cj {
			return ci > cj
		}
		return order[i] > order[j]
	})
	rendered := map[string]string{}
	for _, n := range order {
		if strings.HasPrefix(path.Base(n), "_") {
			continue
		}
		vals := map[string]interface{}{}
		for k, v := range top {
			vals[k] = v
		}
		vals["Template"] = map[string]interface{}{"Name": n, "BasePath": path.Join(meta.Name, "templates")}
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, n, vals); err != nil {
			return "", cleanupExecError(n, err)
		}
		rendered[n] = strings.ReplaceAll(buf.String(), "<no value>", "")
	}
	if notes {
		return rendered[path.Join(meta.Name, "templates", "NOTES.txt")], nil
	}
	var out strings.Builder
	for _, n := range names {
		text, ok := rendered[n]
		if !ok || strings.HasSuffix(n, "NOTES.txt") {
			continue
		}
		for _, doc := range docSplit.Split(text, -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var probe interface{}
			if err := yaml.Unmarshal([]byte(doc), &probe); err != nil {
				return "", fmt.Errorf("YAML parse error on %s: %w\n%s", n, err, doc)
			}
			if probe == nil {
				continue // only comments
			}
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", n, strings.TrimRight(doc, "\n"))
		}
	}
	return out.String(), nil
}
