#!/usr/bin/env node
// Validates manifests rendered by `helm template` (used by .ci/chart-test).
//
// Usage: node validate-manifests.cjs [--external-secret NAME]... [--external-configmap NAME]...
//            [--extract DIR] FILE.yaml...
//
// Three layers, each failing with a message naming the object and the field:
//  1. Schema: every object against the Kubernetes OpenAPI schema of its
//     apiVersion/kind (npm `kubernetes-models`, `@kubernetes-models/prometheus-operator`
//     for ServiceMonitor): types, formats, required fields. cert-manager's Certificate,
//     which those packages lack, against CERTIFICATE_SCHEMA below (cert-manager.io/v1
//     CRD, unknown fields rejected) with ajv.
//  2. Strict fields: each object is type-checked by the TypeScript compiler against
//     the same models' declarations: it rejects unknown (misspelt) fields, which
//     the schema layer lets through, and checks types and enum values again.
//  3. What schemas miss: names and labels valid, selectors match the pod labels,
//     Service/ServiceMonitor/probe ports name real container ports, references
//     (ConfigMap, Secret, ServiceAccount, HPA target) resolve, the hardening the
//     chart promises (non-root, read-only root, no privilege escalation, no caps),
//     and traffikd's memory budget (config memory.max_bytes, default 256MiB) plus
//     PROCESS_OVERHEAD_BYTES fits the container's memory limit. Every file or
//     directory the config names (tls.*_file, callers[].api_key_file,
//     envoy.config_dirs) and every file the exec probes read lies in a read-only
//     directory mount (no subPath, so Secret and ConfigMap updates arrive) of a volume
//     that provides it (its items, or the rendered ConfigMap's keys); probes are the
//     native gRPC ones, or with tls in the config `traffikd --health-check` over TLS;
//     a rendered Certificate writes the mounted TLS Secret and names the probe's host;
//     a NetworkPolicy selects the pods, names container ports and no empty selectors.
//
// Each FILE is one rendering (one release). With --extract DIR it writes, for each
// FILE, what later checks need into DIR/<FILE's base name without .yaml>/: traffik.yaml
// (the config from the ConfigMap), env (the env var names the Deployment sets, one a
// line), dashboard.json (when the Grafana dashboard is rendered), kinds, mounts.json
// (the container's mounts: mountPath, volume type and name, items, and a rendered
// ConfigMap's data), paths (the files and directories the config names, one a line).
// Exit status: 0 when every FILE is valid, 1 otherwise.
// Modules are resolved through NODE_PATH (the chart-test cache).
'use strict';

const fs = require('fs');
const path = require('path');
const YAML = require('yaml');
const ts = require('typescript');

const args = process.argv.slice(2);
const externalSecrets = new Set();
const externalConfigMaps = new Set();
let extractDir = null;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--external-secret') externalSecrets.add(args[++i]);
  else if (args[i] === '--external-configmap') externalConfigMaps.add(args[++i]);
  else if (args[i] === '--extract') extractDir = args[++i];
  else files.push(args[i]);
}
if (files.length === 0) {
  console.error('usage: validate-manifests.cjs [--external-secret NAME] [--extract DIR] FILE...');
  process.exit(2);
}

const errorsByFile = new Map(files.map((f) => [f, []]));
let errors = null;  // the current file's list
const fail = (where, msg) => errors.push(`${where}: ${msg}`);
const docsByFile = new Map();

// traffikd's memory besides the buckets its memory.max_bytes budget counts: code,
// gRPC threads and connection buffers, metrics, malloc slack (an idle traffikd is
// ~17 MiB resident; the budget's per-bucket charge already exceeds the measured
// memory per bucket).
const PROCESS_OVERHEAD_BYTES = 128 * 2 ** 20;
const DEFAULT_MAX_BYTES = 256 * 2 ** 20;  // traffikd's default memory.max_bytes

// traffikd's byte sizes: an integer, or with a KiB, MiB or GiB suffix.
function parseByteSize(v) {
  const m = /^([0-9]+)(KiB|MiB|GiB)?$/.exec(String(v));
  if (!m) return null;
  return Number(m[1]) * { KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30 }[m[2]] || Number(m[1]);
}
// A Kubernetes resource quantity in bytes (binary and decimal suffixes).
function parseQuantity(q) {
  const m = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T|e[0-9]+)?$/.exec(String(q));
  if (!m) return null;
  const mult = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  if (m[2] && m[2].startsWith('e')) return Number(m[1]) * 10 ** Number(m[2].slice(1));
  return Number(m[1]) * (m[2] ? mult[m[2]] : 1);
}
const mib = (b) => `${(b / 2 ** 20).toFixed(1)}Mi`;

// cert-manager.io/v1 Certificate (the CRD's spec, cert-manager 1.15); no npm models
// package covers it. Unknown fields are errors, as the TypeScript layer does for the
// other kinds.
const CERT_USAGES = ['signing', 'digital signature', 'content commitment', 'key encipherment',
  'key agreement', 'data encipherment', 'cert sign', 'crl sign', 'encipher only', 'decipher only',
  'any', 'server auth', 'client auth', 'code signing', 'email protection', 's/mime',
  'ipsec end system', 'ipsec tunnel', 'ipsec user', 'timestamping', 'ocsp signing',
  'microsoft sgc', 'netscape sgc'];
const strMap = { type: 'object', additionalProperties: { type: 'string' } };
const strList = { type: 'array', items: { type: 'string' } };
const CERTIFICATE_SCHEMA = {
  type: 'object', additionalProperties: false, required: ['apiVersion', 'kind', 'metadata', 'spec'],
  properties: {
    apiVersion: { const: 'cert-manager.io/v1' }, kind: { const: 'Certificate' },
    metadata: {
      type: 'object', additionalProperties: false, required: ['name'],
      properties: { name: { type: 'string' }, namespace: { type: 'string' }, labels: strMap, annotations: strMap },
    },
    spec: {
      type: 'object', additionalProperties: false, required: ['secretName', 'issuerRef'],
      properties: {
        secretName: { type: 'string', minLength: 1 },
        issuerRef: {
          type: 'object', additionalProperties: false, required: ['name'],
          properties: { name: { type: 'string', minLength: 1 }, kind: { type: 'string' }, group: { type: 'string' } },
        },
        commonName: { type: 'string', maxLength: 64 },
        dnsNames: strList, ipAddresses: strList, uris: strList, emailAddresses: strList,
        duration: { type: 'string', pattern: '^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$' },
        renewBefore: { type: 'string', pattern: '^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$' },
        renewBeforePercentage: { type: 'integer' },
        revisionHistoryLimit: { type: 'integer', minimum: 1 },
        isCA: { type: 'boolean' },
        usages: { type: 'array', items: { enum: CERT_USAGES } },
        privateKey: {
          type: 'object', additionalProperties: false,
          properties: {
            algorithm: { enum: ['RSA', 'ECDSA', 'Ed25519'] }, encoding: { enum: ['PKCS1', 'PKCS8'] },
            rotationPolicy: { enum: ['Never', 'Always'] }, size: { type: 'integer' },
          },
        },
        secretTemplate: { type: 'object', additionalProperties: false, properties: { annotations: strMap, labels: strMap } },
        subject: { type: 'object' }, literalSubject: { type: 'string' }, keystores: { type: 'object' },
        additionalOutputFormats: { type: 'array' }, encodeUsagesInRequest: { type: 'boolean' },
        nameConstraints: { type: 'object' }, otherNames: { type: 'array' }, signatureAlgorithm: { type: 'string' },
      },
    },
  },
};
let certificateValidator = null;
function validateCertificate(o) {
  if (!certificateValidator) {
    const Ajv = require('ajv');
    certificateValidator = new Ajv({ allErrors: true, strict: false }).compile(CERTIFICATE_SCHEMA);
  }
  if (certificateValidator(o)) return [];
  return certificateValidator.errors.map((e) => `${e.instancePath || '/'} ${e.message}` +
    (e.params && e.params.additionalProperty ? ` (${e.params.additionalProperty})` : '') +
    (e.params && e.params.allowedValues ? ` (${e.params.allowedValues.join(', ')})` : ''));
}
const hasTsModel = (o) => o.apiVersion !== 'cert-manager.io/v1';

const id = (o) => `${o.kind || '?'}/${(o.metadata && o.metadata.name) || '?'}`;

// apiVersion/kind -> [module, export] of kubernetes-models.
function modelModule(apiVersion) {
  if (apiVersion === 'monitoring.coreos.com/v1') {
    return '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
  }
  return `kubernetes-models/${apiVersion}`;
}
function modelFile(apiVersion, kind) {
  return `${modelModule(apiVersion)}/${kind}`;
}

// Name and label rules of the Kubernetes API (apimachinery validation).
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const QUALIFIED_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const CONFIG_KEY = /^[-._a-zA-Z0-9]+$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

function checkQualifiedKey(where, key) {
  const slash = key.lastIndexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : null;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== null && (prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix))) {
    fail(where, `key ${JSON.stringify(key)}: prefix is not a DNS subdomain`);
  }
  if (name.length === 0 || name.length > 63 || !QUALIFIED_NAME.test(name)) {
    fail(where, `key ${JSON.stringify(key)}: name part is not a valid qualified name`);
  }
}
function checkLabels(where, labels) {
  for (const [k, v] of Object.entries(labels || {})) {
    checkQualifiedKey(`${where}.labels`, k);
    if (typeof v !== 'string' || v.length > 63 || !LABEL_VALUE.test(v)) {
      fail(`${where}.labels`, `value of ${k} is not a valid label value: ${JSON.stringify(v)}`);
    }
  }
}
function checkAnnotations(where, ann) {
  for (const [k, v] of Object.entries(ann || {})) {
    checkQualifiedKey(`${where}.annotations`, k);
    if (typeof v !== 'string') fail(`${where}.annotations`, `value of ${k} is not a string`);
  }
}
function checkPortName(where, name) {
  // IANA_SVC_NAME: 1-15 chars, lowercase letters, digits and '-', a letter, no '--'.
  if (!(name.length <= 15 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name) && /[a-z]/.test(name) &&
        !name.includes('--'))) {
    fail(where, `port name ${JSON.stringify(name)} is not a valid IANA service name`);
  }
}
function matches(selector, labels) {
  return Object.entries(selector || {}).every(([k, v]) => labels && labels[k] === v);
}


// traffikd's --health-check flags for a TLS port (server/app/options.cc).
const PROBE_FLAGS = {
  ca: '--tls-ca', cert: '--tls-cert', key: '--tls-key',
  serverName: '--tls-server-name', service: '--health-service',
};
const TRAFFIKD = '/usr/local/bin/traffikd';  // in the image (Dockerfile)

// The files and directories traffikd reads, from its config: [what, path, isDir].
function configPaths(cfg) {
  const out = [];
  const tls = cfg.tls || {};
  for (const k of ['cert_file', 'key_file', 'client_ca_file']) {
    if (tls[k] !== undefined) out.push([`tls.${k}`, tls[k], false]);
  }
  (cfg.callers || []).forEach((c, i) => {
    if (c && c.api_key_file !== undefined) out.push([`callers[${i}].api_key_file`, c.api_key_file, false]);
  });
  ((cfg.envoy && cfg.envoy.config_dirs) || []).forEach((d, i) => out.push([`envoy.config_dirs[${i}]`, d, true]));
  return out;
}

// Files the pod reads (config paths, probe files) must come from a read-only
// directory mount of a volume that provides them; probes must suit the config;
// a Certificate must write the Secret mounted for TLS.
function checkFilesAndProbes(where, cw, c, volumes, cfg, find, byKind, podLabels, extracted) {
  const mounts = (c.volumeMounts || []).map((vm) => ({ vm, vol: volumes.get(vm.name), mp: vm.mountPath.replace(/\/+$/, '') }));
  for (const { vm, vol } of mounts) {
    if (!vol) continue;
    const m = { mountPath: vm.mountPath, volume: vm.name };
    if (vol.secret) Object.assign(m, { type: 'secret', name: vol.secret.secretName, items: vol.secret.items || null });
    else if (vol.configMap) {
      const cm = find('ConfigMap', vol.configMap.name);
      Object.assign(m, { type: 'configMap', name: vol.configMap.name, items: vol.configMap.items || null,
        data: cm ? cm.data || {} : null });
    } else m.type = 'other';
    extracted.mounts.push(m);
  }
  // Why `p` is not provided (null when it is): [volume, problem].
  function provide(p, isDir) {
    if (typeof p !== 'string' || !p.startsWith('/')) return [null, 'is not an absolute path'];
    let best = null;
    for (const m of mounts) {
      if ((p === m.mp || p.startsWith(`${m.mp}/`)) && (!best || m.mp.length > best.mp.length)) best = m;
    }
    if (!best) return [null, 'is not inside any volume mount'];
    const vol = best.vol;
    if (!vol) return [null, `is on mount ${best.vm.name}, which names no volume`];
    const src = vol.secret || vol.configMap;
    const what = vol.secret ? `Secret ${vol.secret.secretName}` : vol.configMap ? `ConfigMap ${vol.configMap.name}` : '';
    if (!src) return [vol, `is on volume ${vol.name}, which is neither a Secret nor a ConfigMap`];
    const rel = p === best.mp ? '' : p.slice(best.mp.length + 1);
    if (isDir) {
      if (rel === '') return [vol, null];
      if (src.items && src.items.some((it) => it.path.startsWith(`${rel}/`))) return [vol, null];
      return [vol, `names no directory of volume ${vol.name} (${what})`];
    }
    if (rel === '') return [vol, `is the mount point of volume ${vol.name}, not a file`];
    if (src.items) {
      return src.items.some((it) => it.path === rel) ? [vol, null] : [vol, `is not an item of volume ${vol.name} (${what}): items ${src.items.map((it) => it.path).join(', ')}`];
    }
    const obj = vol.secret ? find('Secret', vol.secret.secretName) : find('ConfigMap', vol.configMap.name);
    if (obj && !(rel in (obj.data || {}))) return [vol, `is not a key of the rendered ${what}`];
    return [vol, null];
  }

  const volumeOf = {};
  for (const [what, p, isDir] of configPaths(cfg)) {
    const [vol, problem] = provide(p, isDir);
    if (problem) fail(where, `config ${what} ${JSON.stringify(p)} ${problem}`);
    volumeOf[what] = vol;
    extracted.paths.push(`${isDir ? 'dir' : 'file'} ${p}`);
  }

  const tls = cfg.tls;
  const grpcPort = ((c.ports || []).find((p) => p.name === 'grpc') || {}).containerPort;
  const probeFiles = [];
  for (const kind of ['readinessProbe', 'livenessProbe']) {
    const pr = c[kind];
    if (!pr) continue;
    if (!tls) {
      if (!pr.grpc) fail(cw, `${kind} must be a native gRPC probe`);
      continue;
    }
    if (pr.grpc) {
      fail(cw, `${kind} is a native gRPC probe, which cannot speak TLS (the config has tls)`);
      continue;
    }
    const cmd = (pr.exec && pr.exec.command) || [];
    if (cmd[0] !== TRAFFIKD || cmd[1] !== '--health-check') {
      fail(cw, `${kind} must run ${TRAFFIKD} --health-check (the config has tls)`);
      continue;
    }
    if (cmd[2] !== `127.0.0.1:${grpcPort}`) fail(cw, `${kind} checks ${cmd[2]}, not 127.0.0.1:${grpcPort} (the grpc port)`);
    const flags = {};
    for (let i = 3; i < cmd.length; i += 2) {
      if (!Object.values(PROBE_FLAGS).includes(cmd[i])) fail(cw, `${kind}: unknown flag ${cmd[i]}`);
      flags[cmd[i]] = cmd[i + 1];
    }
    const need = [PROBE_FLAGS.ca, PROBE_FLAGS.serverName];
    if (tls.require_client_cert) need.push(PROBE_FLAGS.cert, PROBE_FLAGS.key);
    for (const f of need) if (flags[f] === undefined) fail(cw, `${kind} lacks ${f}`);
    for (const f of [PROBE_FLAGS.ca, PROBE_FLAGS.cert, PROBE_FLAGS.key]) {
      if (flags[f] === undefined) continue;
      const [vol, problem] = provide(flags[f], false);
      if (problem) fail(cw, `${kind} ${f} ${JSON.stringify(flags[f])} ${problem}`);
      probeFiles.push({ flag: f, path: flags[f], vol });
    }
    if (flags[PROBE_FLAGS.serverName]) probeFiles.push({ flag: PROBE_FLAGS.serverName, name: flags[PROBE_FLAGS.serverName] });
  }
  for (const pf of probeFiles) if (pf.path && !extracted.paths.includes(`file ${pf.path}`)) extracted.paths.push(`file ${pf.path}`);

  // A Certificate must write the Secret the TLS files come from, name the probes'
  // server name, and allow client auth when the probes present its certificate.
  const certs = byKind('Certificate');
  if (certs.length > 0) {
    const tlsVol = volumeOf['tls.cert_file'];
    const tlsSecret = tlsVol && tlsVol.secret && tlsVol.secret.secretName;
    if (!tlsSecret) fail(where, 'a Certificate is rendered but the config has no tls.cert_file from a Secret');
    for (const cert of certs) {
      const cwn = id(cert);
      if (tlsSecret && cert.spec.secretName !== tlsSecret) fail(cwn, `writes Secret ${cert.spec.secretName}, but tls.cert_file comes from Secret ${tlsSecret}`);
      if (cert.spec.secretName !== tlsSecret) continue;
      for (const pf of probeFiles) {
        if (pf.name && !(cert.spec.dnsNames || []).includes(pf.name)) fail(cwn, `dnsNames lack ${pf.name}, the name the probes check (${PROBE_FLAGS.serverName})`);
        if (pf.flag === PROBE_FLAGS.cert && pf.vol && pf.vol.secret && pf.vol.secret.secretName === tlsSecret &&
            !(cert.spec.usages || []).includes('client auth')) {
          fail(cwn, 'usages lack "client auth", but the probes present this certificate as a client certificate');
        }
      }
    }
  }
}

// Checks one rendering; problems go to errorsByFile.get(file).
function validateFile(file) {
  // ---- parse -------------------------------------------------------------------
  const docs = [];
  docsByFile.set(file, docs);
  for (const d of YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'))) {
    if (d.errors.length) {
      fail(file, `YAML error: ${d.errors[0].message}`);
      continue;
    }
    const obj = d.toJS();
    if (obj == null) continue;
    docs.push(obj);
  }
  if (docs.length === 0) fail(file, 'no objects rendered');

  // ---- 1. schema ------------------------------------------------------------------
  for (const o of docs) {
    if (!o.apiVersion || !o.kind) {
      fail(id(o), 'missing apiVersion or kind');
      continue;
    }
    if (o.apiVersion === 'cert-manager.io/v1' && o.kind === 'Certificate') {
      for (const e of validateCertificate(o)) fail(`${id(o)} (${o.apiVersion})`, `schema: ${e}`);
      continue;
    }
    let Model;
    try {
      Model = require(modelModule(o.apiVersion))[o.kind];
    } catch (e) {
      Model = undefined;
    }
    if (!Model) {
      fail(id(o), `no schema for ${o.apiVersion} ${o.kind} (unknown API or kind)`);
      continue;
    }
    try {
      new Model(o).validate();
    } catch (e) {
      fail(`${id(o)} (${o.apiVersion})`, `schema: ${e.message}`);
    }
  }

  // ---- 3. what schemas miss -------------------------------------------------------
  const byKind = (k) => docs.filter((o) => o.kind === k);
  const find = (k, name) => docs.find((o) => o.kind === k && o.metadata && o.metadata.name === name);
  const seen = new Set();

  for (const o of docs) {
    const m = o.metadata || {};
    const where = id(o);
    const key = `${o.kind}/${m.namespace || ''}/${m.name}`;
    if (seen.has(key)) fail(where, 'rendered twice');
    seen.add(key);
    if (!m.name || m.name.length > 253 || !DNS1123_SUBDOMAIN.test(m.name)) {
      fail(where, `metadata.name ${JSON.stringify(m.name)} is not a DNS-1123 subdomain`);
    }
    if (o.kind === 'Service' && (m.name.length > 63 || !DNS1035_LABEL.test(m.name))) {
      fail(where, 'a Service name must be a DNS-1035 label (<= 63 chars)');
    }
    if (m.namespace !== undefined && (m.namespace.length > 63 || !DNS1123_LABEL.test(m.namespace))) {
      fail(where, `metadata.namespace ${JSON.stringify(m.namespace)} is not a DNS-1123 label`);
    }
    checkLabels(`${where} metadata`, m.labels);
    checkAnnotations(`${where} metadata`, m.annotations);
    for (const k of Object.keys(o.data || {})) {
      if (!CONFIG_KEY.test(k)) fail(where, `data key ${JSON.stringify(k)} is not a valid key`);
    }
  }

  const deployments = byKind('Deployment');
  if (deployments.length !== 1) fail(file, `expected exactly one Deployment, got ${deployments.length}`);
  const dep = deployments[0];
  const extracted = { config: null, env: [], dashboard: null, mounts: [], paths: [] };

  if (dep) {
    const where = id(dep);
    const tpl = (dep.spec && dep.spec.template) || {};
    const podLabels = (tpl.metadata && tpl.metadata.labels) || {};
    const pod = tpl.spec || {};
    checkLabels(`${where} pod template`, podLabels);
    checkAnnotations(`${where} pod template`, tpl.metadata && tpl.metadata.annotations);
    const sel = (dep.spec.selector && dep.spec.selector.matchLabels) || {};
    if (Object.keys(sel).length === 0) fail(where, 'spec.selector.matchLabels is empty');
    if (!matches(sel, podLabels)) fail(where, 'spec.selector.matchLabels does not match the pod template labels');
    // checksum/config is optional (restartOnConfigChange); when present it is a sha256.
    const annotations = (tpl.metadata && tpl.metadata.annotations) || {};
    if ('checksum/config' in annotations && !/^[0-9a-f]{64}$/.test(annotations['checksum/config'] || '')) {
      fail(where, 'pod template checksum/config annotation is not a sha256');
    }

    // Security promised by the chart.
    const psc = pod.securityContext || {};
    if (psc.runAsNonRoot !== true) fail(where, 'pod securityContext.runAsNonRoot must be true');
    if (!(Number.isInteger(psc.runAsUser) && psc.runAsUser > 0)) fail(where, 'pod securityContext.runAsUser must be a non-zero UID');

    const volumes = new Map((pod.volumes || []).map((v) => [v.name, v]));
    for (const v of pod.volumes || []) {
      if (!DNS1123_LABEL.test(v.name)) fail(where, `volume name ${JSON.stringify(v.name)} is not a DNS-1123 label`);
      if (v.configMap) {
        const cm = find('ConfigMap', v.configMap.name);
        if (!cm && !externalConfigMaps.has(v.configMap.name)) {
          fail(where, `volume ${v.name} names ConfigMap ${v.configMap.name}, which is not rendered`);
        }
        for (const it of v.configMap.items || []) {
          if (cm && !(cm.data && it.key in cm.data)) fail(where, `volume ${v.name}: ConfigMap ${v.configMap.name} has no key ${it.key}`);
        }
      }
      if (v.secret) {
        const sec = find('Secret', v.secret.secretName);
        const cert = docs.find((o) => o.kind === 'Certificate' && o.spec && o.spec.secretName === v.secret.secretName);
        if (!sec && !cert && !externalSecrets.has(v.secret.secretName)) {
          fail(where, `volume ${v.name}: Secret ${v.secret.secretName} is neither rendered, written by a rendered Certificate, nor an expected existing secret`);
        }
        for (const it of v.secret.items || []) {
          if (sec && !(sec.data && it.key in sec.data)) fail(where, `volume ${v.name}: Secret ${v.secret.secretName} has no key ${it.key}`);
          if (cert && !['tls.crt', 'tls.key', 'ca.crt'].includes(it.key)) fail(where, `volume ${v.name}: a cert-manager Secret has no key ${it.key}`);
        }
      }
    }
    if (pod.serviceAccountName && byKind('ServiceAccount').length > 0 && !find('ServiceAccount', pod.serviceAccountName)) {
      fail(where, `serviceAccountName ${pod.serviceAccountName} is not rendered`);
    }
    for (const c of pod.topologySpreadConstraints || []) {
      const ls = c.labelSelector && c.labelSelector.matchLabels;
      if (!ls || !matches(ls, podLabels)) fail(where, `topologySpreadConstraint ${c.topologyKey}: labelSelector does not select the pods`);
    }

    const containerPorts = [];
    for (const c of pod.containers || []) {
      const cw = `${where} container ${c.name}`;
      if (!DNS1123_LABEL.test(c.name) || c.name.length > 63) fail(cw, 'container name is not a DNS-1123 label');
      const ports = c.ports || [];
      const names = new Set();
      for (const p of ports) {
        if (p.name) {
          checkPortName(cw, p.name);
          if (names.has(p.name)) fail(cw, `port name ${p.name} used twice`);
          names.add(p.name);
        }
        containerPorts.push(p);
      }
      const numbers = new Set(ports.map((p) => p.containerPort));
      if (numbers.size !== ports.length) fail(cw, 'two ports share a containerPort');
      for (const kind of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
        const pr = c[kind];
        if (!pr) continue;
        if (pr.grpc && !numbers.has(pr.grpc.port)) fail(cw, `${kind}.grpc.port ${pr.grpc.port} is not a container port`);
        for (const h of [pr.httpGet, pr.tcpSocket]) {
          if (!h) continue;
          if (typeof h.port === 'string' ? !names.has(h.port) : !numbers.has(h.port)) {
            fail(cw, `${kind} port ${h.port} is not a container port`);
          }
        }
      }
      if (c.name === 'traffikd') {
        // The probes' kind (native gRPC, or traffikd's health client over TLS) is
        // checked against the config below.
        if (!c.readinessProbe) fail(cw, 'no readinessProbe');
        if (!c.livenessProbe) fail(cw, 'no livenessProbe');
        if (!names.has('grpc')) fail(cw, 'no port named grpc');
      }
      const sc = c.securityContext || {};
      if (sc.allowPrivilegeEscalation !== false) fail(cw, 'securityContext.allowPrivilegeEscalation must be false');
      if (sc.readOnlyRootFilesystem !== true) fail(cw, 'securityContext.readOnlyRootFilesystem must be true');
      if (!(sc.capabilities && (sc.capabilities.drop || []).includes('ALL'))) fail(cw, 'securityContext.capabilities.drop must include ALL');
      if (sc.privileged === true) fail(cw, 'must not be privileged');
      for (const vm of c.volumeMounts || []) {
        const v = volumes.get(vm.name);
        if (!v) fail(cw, `volumeMount ${vm.name} names no volume`);
        // A subPath mount never sees the kubelet's updates (a renewed certificate,
        // a changed key or ConfigMap); a writable one would let traffikd change them.
        if (v && (v.secret || v.configMap) && vm.subPath !== undefined) {
          fail(cw, `volumeMount ${vm.name} uses subPath ${vm.subPath}: updates of the volume would not reach the pod`);
        }
        if (v && (v.secret || v.configMap) && vm.readOnly !== true) fail(cw, `volumeMount ${vm.name} must be readOnly`);
      }
      const envNames = new Set();
      for (const e of c.env || []) {
        if (!ENV_NAME.test(e.name)) fail(cw, `env name ${JSON.stringify(e.name)} is not valid`);
        if (envNames.has(e.name)) fail(cw, `env ${e.name} set twice`);
        envNames.add(e.name);
        const ref = e.valueFrom && e.valueFrom.secretKeyRef;
        if (ref) {
          const s = find('Secret', ref.name);
          if (s) {
            if (!(s.data && ref.key in s.data)) fail(cw, `env ${e.name}: Secret ${ref.name} has no key ${ref.key}`);
          } else if (!externalSecrets.has(ref.name)) {
            fail(cw, `env ${e.name}: Secret ${ref.name} is neither rendered nor an expected existing secret`);
          }
        }
        extracted.env.push(e.name);
      }
    }
    if (dep.spec.template.spec.containers.length) {
      // The config file the pods read.
      const mount = (dep.spec.template.spec.containers[0].volumeMounts || []).find((v) => v.name === 'config');
      const vol = volumes.get('config');
      const cm = vol && vol.configMap && find('ConfigMap', vol.configMap.name);
      if (!mount || !cm || !cm.data || !cm.data['traffik.yaml']) {
        fail(where, 'no ConfigMap-backed config volume with traffik.yaml');
      } else {
        const argsv = dep.spec.template.spec.containers[0].args || [];
        const cfgPath = argsv[argsv.indexOf('--config') + 1];
        if (cfgPath !== `${mount.mountPath}/traffik.yaml`) fail(where, `--config ${cfgPath} is not the mounted ${mount.mountPath}/traffik.yaml`);
        extracted.config = cm.data['traffik.yaml'];
        // The memory budget must fit the memory limit, or the pod is OOM-killed
        // before traffikd refuses new buckets.
        const c0 = dep.spec.template.spec.containers[0];
        const limit = c0.resources && c0.resources.limits && c0.resources.limits.memory;
        let cfg = null;
        try {
          cfg = YAML.parse(extracted.config);
        } catch (e) {
          fail(where, `traffik.yaml does not parse: ${e.message}`);
        }
        if (cfg && limit !== undefined) {
          const raw = cfg.memory && cfg.memory.max_bytes;
          const budget = raw === undefined ? DEFAULT_MAX_BYTES : parseByteSize(raw);
          const limitBytes = parseQuantity(limit);
          if (budget === null) {
            fail(where, `config memory.max_bytes ${JSON.stringify(raw)} is not a byte size`);
          } else if (limitBytes === null) {
            fail(where, `resources.limits.memory ${JSON.stringify(limit)} is not a quantity`);
          } else if (budget + PROCESS_OVERHEAD_BYTES > limitBytes) {
            fail(where, `config memory.max_bytes (${mib(budget)}) + ${mib(PROCESS_OVERHEAD_BYTES)} ` +
                 `process overhead exceeds resources.limits.memory (${limit}): lower ` +
                 'config.memory.max_bytes or raise the limit');
          }
        }
      }
    }

    const c0 = dep.spec.template.spec.containers[0];
    if (c0 && extracted.config !== null) {
      let cfg = null;
      try {
        cfg = YAML.parse(extracted.config) || {};
      } catch (e) { /* reported above */ }
      if (cfg) checkFilesAndProbes(where, `${where} container ${c0.name}`, c0, volumes, cfg, find, byKind, podLabels, extracted);
    }
    for (const np of byKind('NetworkPolicy')) {
      const nw = id(np);
      const ps = np.spec.podSelector && np.spec.podSelector.matchLabels;
      if (!ps || Object.keys(ps).length === 0 || !matches(ps, podLabels)) fail(nw, 'spec.podSelector does not select the Deployment pods');
      if (!(np.spec.policyTypes || []).includes('Ingress')) fail(nw, 'policyTypes lacks Ingress');
      (np.spec.ingress || []).forEach((rule, i) => {
        for (const p of rule.ports || []) {
          const ok = typeof p.port === 'string' ? containerPorts.some((cp) => cp.name === p.port)
                                                : containerPorts.some((cp) => cp.containerPort === p.port);
          if (!ok) fail(nw, `ingress[${i}] port ${p.port} is not a container port`);
        }
        if (!rule.ports || rule.ports.length === 0) fail(nw, `ingress[${i}] admits every port`);
        if (!rule.from || rule.from.length === 0) fail(nw, `ingress[${i}] admits every source`);
        (rule.from || []).forEach((f, j) => {
          const ns = f.namespaceSelector;
          if (ns && Object.keys(ns.matchLabels || {}).length === 0 && (ns.matchExpressions || []).length === 0) {
            fail(nw, `ingress[${i}].from[${j}].namespaceSelector is empty: it admits every namespace`);
          }
        });
      });
    }
    for (const svc of byKind('Service')) {
      const sw = id(svc);
      if (!matches(svc.spec.selector, podLabels) || Object.keys(svc.spec.selector || {}).length === 0) {
        fail(sw, 'spec.selector does not select the Deployment pods');
      }
      for (const p of svc.spec.ports || []) {
        if (p.name) checkPortName(sw, p.name);
        const tp = p.targetPort === undefined ? p.port : p.targetPort;
        const ok = typeof tp === 'string' ? containerPorts.some((cp) => cp.name === tp)
                                          : containerPorts.some((cp) => cp.containerPort === tp);
        if (!ok) fail(sw, `port ${p.name}: targetPort ${tp} is not a container port`);
      }
    }
    for (const pdb of byKind('PodDisruptionBudget')) {
      if (!matches(pdb.spec.selector && pdb.spec.selector.matchLabels, podLabels)) fail(id(pdb), 'selector does not select the Deployment pods');
      if ((pdb.spec.minAvailable !== undefined) === (pdb.spec.maxUnavailable !== undefined)) fail(id(pdb), 'set exactly one of minAvailable / maxUnavailable');
    }
    for (const hpa of byKind('HorizontalPodAutoscaler')) {
      const ref = hpa.spec.scaleTargetRef || {};
      if (ref.kind !== 'Deployment' || ref.name !== dep.metadata.name || ref.apiVersion !== 'apps/v1') fail(id(hpa), 'scaleTargetRef does not name the Deployment');
      if ((hpa.spec.minReplicas || 1) > hpa.spec.maxReplicas) fail(id(hpa), 'minReplicas > maxReplicas');
      if (dep.spec.replicas !== undefined) fail(where, 'spec.replicas is set while an HPA manages the Deployment');
    }
    for (const sm of byKind('ServiceMonitor')) {
      const services = byKind('Service').filter((s) => matches(sm.spec.selector.matchLabels, s.metadata.labels));
      if (services.length === 0) fail(id(sm), 'selector matches no rendered Service');
      for (const ep of sm.spec.endpoints || []) {
        if (!services.every((s) => s.spec.ports.some((p) => p.name === ep.port))) fail(id(sm), `endpoint port ${ep.port} is not a Service port name`);
      }
    }
  }
  for (const cm of byKind('ConfigMap')) {
    if (cm.data && cm.data['traffik.json'] !== undefined) {
      try {
        extracted.dashboard = JSON.parse(cm.data['traffik.json']);
      } catch (e) {
        fail(id(cm), `dashboard JSON does not parse: ${e.message}`);
      }
    }
  }

  if (extractDir) {
    const dir = path.join(extractDir, path.basename(file).replace(/\.ya?ml$/, ''));
    fs.mkdirSync(dir, { recursive: true });
    if (extracted.config !== null) fs.writeFileSync(path.join(dir, 'traffik.yaml'), extracted.config);
    fs.writeFileSync(path.join(dir, 'env'), extracted.env.map((e) => `${e}\n`).join(''));
    if (extracted.dashboard) fs.writeFileSync(path.join(dir, 'dashboard.json'), JSON.stringify(extracted.dashboard));
    fs.writeFileSync(path.join(dir, 'kinds'), docs.map((o) => `${o.kind}/${o.metadata.name}\n`).join(''));
    fs.writeFileSync(path.join(dir, 'mounts.json'), JSON.stringify(extracted.mounts, null, 2));
    fs.writeFileSync(path.join(dir, 'paths'), extracted.paths.map((p) => `${p}\n`).join(''));
  }
}

for (const file of files) {
  errors = errorsByFile.get(file);
  validateFile(file);
}

// ---- 2. strict fields (TypeScript excess-property and literal-type checks) ------
// One program for all files (creating it is the slow part): FILE n becomes
// manifests-n.ts, one typed constant per object, pretty-printed so a diagnostic's
// line names the object.
{
  const tmp = fs.mkdtempSync(path.join(require('os').tmpdir(), 'traffik-tsc-'));
  const tsFiles = new Map();  // ts path -> {file, owners}
  files.forEach((file, fn) => {
    const docs = docsByFile.get(file);
    const lines = [];
    const owners = [];  // line index -> object id
    docs.forEach((o, n) => {
      if (!o.apiVersion || !o.kind || !hasTsModel(o)) return;
      lines.push(`import { I${o.kind} as T${n} } from ${JSON.stringify(modelFile(o.apiVersion, o.kind))};`);
      owners.push(id(o));
    });
    docs.forEach((o, n) => {
      if (!o.apiVersion || !o.kind || !hasTsModel(o)) return;
      const body = JSON.stringify(o, null, 2).split('\n');
      body[0] = `export const o${n}: T${n} = ${body[0]}`;
      body[body.length - 1] += ';';
      for (const l of body) {
        lines.push(l);
        owners.push(id(o));
      }
    });
    const tsFile = path.join(tmp, `manifests-${fn}.ts`);
    fs.writeFileSync(tsFile, lines.join('\n') + '\nexport {};\n');
    tsFiles.set(tsFile.replace(/\\/g, '/'), { file, owners });
  });
  const program = ts.createProgram([...tsFiles.keys()], {
    noEmit: true, strict: true, skipLibCheck: true, target: ts.ScriptTarget.ES2020,
    module: ts.ModuleKind.CommonJS, moduleResolution: ts.ModuleResolutionKind.Node10,
    typeRoots: [], types: [],
    baseUrl: tmp, paths: { '*': (process.env.NODE_PATH || '').split(':').filter(Boolean).map((p) => `${p}/*`) },
  });
  let keep = false;
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const msg = ts.flattenDiagnosticMessageText(d.messageText, '\n').split('\n')[0].slice(0, 400);
    const t = d.file && tsFiles.get(d.file.fileName);
    if (t) {
      const { line } = d.file.getLineAndCharacterOfPosition(d.start);
      errorsByFile.get(t.file).push(`${t.owners[line] || '?'} (line ${line + 1} of ${d.file.fileName}): strict: ${msg}`);
      keep = true;
    } else {
      for (const f of files) errorsByFile.get(f).push(`typescript: ${msg}`);
    }
  }
  if (!keep) fs.rmSync(tmp, { recursive: true, force: true });
}

let failed = 0;
for (const file of files) {
  const errs = errorsByFile.get(file);
  const docs = docsByFile.get(file);
  if (errs.length) {
    failed++;
    for (const e of errs) console.error(`  ${file}: ${e}`);
    console.error(`${file}: ${errs.length} problem(s) in ${docs.length} objects`);
  } else {
    console.log(`${file}: ${docs.length} objects valid (${docs.map((o) => o.kind).join(', ')})`);
  }
}
process.exit(failed ? 1 : 0);
