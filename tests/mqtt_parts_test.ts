/**
 * The MQTT bridge's parts that need no broker: names and topics, `set` payloads, discovery
 * configs, settings, credentials and the messages for connection problems.
 */
import {
  assert,
  assertEquals,
  assertMatch,
  assertNotEquals,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import {
  credentialsFromEnv,
  parseCredentials,
  PASSWORD_ENV,
  readCredentialsFile,
  USERNAME_ENV,
} from "../bridges/mqtt/credentials.ts";
import { readCaFile } from "../bridges/mqtt/ca_file.ts";
import { watchCommand } from "../bridges/mqtt/watch_command.ts";
import { describeProblem, refusedPublish } from "../bridges/mqtt/problems.ts";
import {
  type Oversized,
  PacketFilter,
  publishSize,
  type SkippedPublish,
} from "../bridges/mqtt/packet_size.ts";
import { delay } from "./helpers/waiting.ts";
import { BacklogReport } from "../bridges/mqtt/backlog_report.ts";
import { localMachine, MACHINE_ID_PATHS, mqttIdentity } from "../bridges/mqtt/identity.ts";
import { discoveryMessages } from "../bridges/mqtt/discovery.ts";
import { OncePerKind, parseSetPayload } from "../bridges/mqtt/set_payload.ts";
import {
  mqttBridgeArgs,
  mqttBridgePermissions,
  mqttSettings,
  parseBrokerUrl,
} from "../bridges/mqtt/settings.ts";
import {
  checkTopicPrefix,
  defaultClientId,
  defaultPrefix,
  deviceId,
  machineName,
  MAX_CLIENT_ID_LENGTH,
  topicsFor,
} from "../bridges/mqtt/topics.ts";
import { assertThrowsWith } from "./helpers/assertions.ts";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { withTempDir } from "./helpers/temp.ts";

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);

Deno.test("machineName() tells two hosts of the same name apart by machine id, and is stable", async () => {
  const a = await machineName("raspberrypi", "0123456789abcdef0123456789abcdef\n");
  const b = await machineName("raspberrypi", "fedcba9876543210fedcba9876543210\n");
  assertNotEquals(a, b);
  assertEquals(a, await machineName("raspberrypi", "0123456789abcdef0123456789abcdef"));
  assert(/^raspberrypi-[0-9a-f]{6}$/.test(a), a);
  assert(!a.includes("0123456789"), "the machine id itself is never published");
  assertEquals(await machineName("My Host.local", undefined), "my-host-local");
  assertEquals(defaultPrefix(a), `mmap-ipc/${a}`);
  assertEquals(defaultClientId(a), `mmap-ipc-${a}`);
  assertEquals(defaultClientId(a, "kitchen/pi"), `mmap-ipc-${a}-kitchen-pi`);
  // Upper case is lost in the id: the hash of the exact prefix tells it from kitchen/pi.
  assertEquals(defaultClientId(a, "Kitchen/Pi"), `mmap-ipc-${a}-kitchen-pi--9e4d97`);
});

Deno.test("mqttIdentity() takes the flags, else defaults; a chosen prefix gets its own client id", () => {
  assertEquals(mqttIdentity({}, "pi-3fa2c1"), {
    prefix: "mmap-ipc/pi-3fa2c1",
    clientId: "mmap-ipc-pi-3fa2c1",
  });
  assertEquals(mqttIdentity({ prefix: "kitchen/pi" }, "pi-3fa2c1"), {
    prefix: "kitchen/pi",
    clientId: "mmap-ipc-pi-3fa2c1-kitchen-pi",
  });
  assertEquals(mqttIdentity({ prefix: "a", clientId: "me" }, "pi-3fa2c1"), {
    prefix: "a",
    clientId: "me",
  });
});

testWith(
  [...NEEDS.children, requires("uname")],
  "localMachine() reads the host name uname(1) gives, and the machine id",
  async () => {
    const { hostname, name } = await localMachine();
    const uname = await new Deno.Command("uname", { args: ["-n"] }).output();
    assertEquals(hostname, new TextDecoder().decode(uname.stdout).trim());
    let machineId: string | undefined;
    for (const path of MACHINE_ID_PATHS) {
      try {
        machineId = await Deno.readTextFile(path);
        if (machineId.trim()) break;
      } catch {
        // Not on this machine: try the next.
      }
    }
    assertEquals(name, await machineName(hostname, machineId));
  },
);

Deno.test("topicsFor() and deviceId() derive everything from the prefix", () => {
  assertEquals(topicsFor("mmap-ipc/pi-3fa2c1"), {
    state: "mmap-ipc/pi-3fa2c1/led/state",
    set: "mmap-ipc/pi-3fa2c1/led/set",
    action: "mmap-ipc/pi-3fa2c1/button/action",
    availability: "mmap-ipc/pi-3fa2c1/availability",
    echo: "mmap-ipc/pi-3fa2c1/echo",
  });
  assertEquals(deviceId("mmap-ipc/pi-3fa2c1"), "mmap_ipc_pi_3fa2c1");
  assertNotEquals(deviceId("!!"), deviceId("??"));
  assert(/^[a-z0-9_]+$/.test(deviceId("!!")));
});

Deno.test("defaultClientId() is at most 128 characters, as --mqtt-client-id must be, and still tells long prefixes apart", () => {
  const host = `${"h".repeat(63)}-3fa2c1`; // the longest host name, and the machine id's hash
  const long = "kitchen/".repeat(24) + "pi"; // 194 characters, exact: lower-case levels
  const ids = [long, `${long}x`, long.toUpperCase(), long.replace(/\//g, "-")].map((prefix) =>
    defaultClientId(host, prefix)
  );
  for (const id of ids) {
    assert(id.length <= MAX_CLIENT_ID_LENGTH, `${id.length}: ${id}`);
    assertMatch(id, /^mmap-ipc-h+-3fa2c1-kitchen-[a-z0-9-]*[a-z0-9]--[0-9a-f]{6}$/);
  }
  assertEquals(new Set(ids).size, ids.length, ids.join("\n"));
  assertEquals(defaultClientId(host, long), ids[0], "the same each time");
  // Another machine with the same prefix: another id.
  assertNotEquals(defaultClientId(`${"h".repeat(63)}-000000`, long), ids[0]);
  // Short ids are as they were.
  assertEquals(defaultClientId(host, "a/b"), `mmap-ipc-${host}-a-b`);
});

Deno.test("deviceId() and defaultClientId() differ for prefixes that differ only in punctuation or case", () => {
  // Ids that spell their prefix exactly stay as they always were (Home Assistant keeps its
  // entities): the default prefix, and levels of lower-case letters and digits.
  assertEquals(deviceId("mmap-ipc/pi-3fa2c1"), "mmap_ipc_pi_3fa2c1");
  assertEquals(deviceId("home/kitchen"), "home_kitchen");
  assertEquals(deviceId("a/b"), "a_b");
  assertEquals(defaultClientId("pi-3fa2c1", "a/b"), "mmap-ipc-pi-3fa2c1-a-b");
  // The rest get a hash of the exact prefix, fixed forever: it names devices in Home Assistant.
  assertEquals(deviceId("a-b"), "a_b__2a89df");
  assertEquals(defaultClientId("pi-3fa2c1", "a-b"), "mmap-ipc-pi-3fa2c1-a-b--2a89df");
  const prefixes = [
    "a/b",
    "a-b",
    "a_b",
    "a.b",
    "A/b",
    "a/b-c",
    "a-b/c",
    "a/b/c",
    "mmap-ipc/pi-3fa2c1",
    "mmap/ipc/pi/3fa2c1",
    "mmap/ipc/pi-3fa2c1",
    "mmap-ipc/pi/3fa2c1",
    "mmap-ipc",
    "mmap/ipc",
    "!!",
    "??",
  ];
  for (const id of [deviceId, (prefix: string) => defaultClientId("pi-3fa2c1", prefix)]) {
    const ids = prefixes.map(id);
    assertEquals(new Set(ids).size, prefixes.length, ids.join(" "));
    assertEquals(prefixes.map(id), ids, "stable");
  }
  for (const prefix of prefixes) {
    assertMatch(deviceId(prefix), /^[a-z0-9_]+$/, "Home Assistant's node id characters");
    assertMatch(defaultClientId("pi-3fa2c1", prefix), /^[a-z0-9-]+$/);
  }
});

Deno.test("checkTopicPrefix() refuses wildcards, empty levels, empty prefixes, control characters, noncharacters and $", () => {
  assertEquals(checkTopicPrefix("home/kitchen", "--mqtt-prefix"), "home/kitchen");
  assertEquals(checkTopicPrefix("c\u00e9/\u{1F4A1}/x$", "--mqtt-prefix"), "c\u00e9/\u{1F4A1}/x$");
  for (
    const [prefix, why] of [
      ["", "empty"],
      ["home/#", "wildcard"],
      ["home/+/x", "wildcard"],
      ["/home", "empty level"],
      ["home/", "empty level"],
      ["a//b", "empty level"],
      ["x".repeat(201), "longer than 200"],
      ["a\0b", "U+0000"],
      ["tab\there", "U+0009, a control character"],
      ["x\x7fy", "U+007F"],
      ["x\x85y", "U+0085"],
      ["x\uffffy", "U+FFFF"],
      ["x\ufdd0y", "U+FDD0"],
      ["x\u{10FFFE}", "U+10FFFE"],
      ["$SYS/x", "starts with $"],
    ]
  ) {
    assertThrowsWith(
      () => checkTopicPrefix(prefix, "--mqtt-prefix"),
      TypeError,
      "--mqtt-prefix",
      why,
    );
  }
});

Deno.test("parseSetPayload() takes ON, OFF and TOGGLE in any case, an empty payload as a clear, and sorts the rest by kind", () => {
  assertEquals(parseSetPayload(bytes("ON")), { command: "ON" });
  assertEquals(parseSetPayload(bytes(" off\n")), { command: "OFF" });
  assertEquals(parseSetPayload(bytes("Toggle")), { command: "TOGGLE" });
  // How a retained message is cleared (mosquitto_pub -r -n): nothing to warn of.
  assertEquals(parseSetPayload(bytes("")), { cleared: true });
  const kind = (payload: Uint8Array): string | undefined => {
    const parsed = parseSetPayload(payload);
    return "malformed" in parsed ? parsed.malformed : undefined;
  };
  assertEquals(kind(bytes(" \t")), "blank");
  // Only ASCII letters are upper-cased: U+FB00 (a ligature) would spell "FF", full-width
  // letters stay what they are.
  assertEquals(kind(bytes("o\ufb00")), "unknown word");
  assertEquals(kind(bytes("\uff2f\uff2e")), "unknown word");
  assertEquals(kind(bytes("\u0131") /* dotless i */), "unknown word");
  assertEquals(kind(bytes("1")), "unknown word");
  assertEquals(kind(bytes('{"state":"ON"}')), "unknown word");
  assertEquals(kind(bytes("x".repeat(65))), "too long");
  assertEquals(kind(new Uint8Array([0xff, 0x00])), "not UTF-8 text");
  const long = parseSetPayload(bytes("y".repeat(100_000)));
  assert("sample" in long && long.sample.length < 60, "only the start is quoted");
});

Deno.test("OncePerKind counts every kind and says first only once", () => {
  const once = new OncePerKind<string>();
  assertEquals([once.first("a"), once.first("a"), once.first("b"), once.first("a")], [
    true,
    false,
    true,
    false,
  ]);
  assertEquals(once.count("a"), 3);
});

Deno.test("discoveryMessages() describe one device: the LED as a light, the button as a trigger", () => {
  const topics = topicsFor("mmap-ipc/pi-3fa2c1");
  const [light, trigger] = discoveryMessages({
    discoveryPrefix: "homeassistant",
    deviceId: "mmap_ipc_pi_3fa2c1",
    deviceName: "mmap-ipc pi",
    model: "Button and LED (Pi build, GPIO)",
    version: "1.2.3",
    topics,
  });
  assertEquals(light.topic, "homeassistant/light/mmap_ipc_pi_3fa2c1/led/config");
  assertEquals(
    trigger.topic,
    "homeassistant/device_automation/mmap_ipc_pi_3fa2c1/button_short_press/config",
  );
  const device = {
    identifiers: ["mmap_ipc_pi_3fa2c1"],
    name: "mmap-ipc pi",
    manufacturer: "mmap-ipc",
    model: "Button and LED (Pi build, GPIO)",
    sw_version: "1.2.3",
  };
  assertEquals(light.payload, {
    name: "LED",
    unique_id: "mmap_ipc_pi_3fa2c1_led",
    schema: "basic",
    command_topic: topics.set,
    state_topic: topics.state,
    payload_on: "ON",
    payload_off: "OFF",
    availability_topic: topics.availability,
    payload_available: "online",
    payload_not_available: "offline",
    qos: 1,
    device,
    origin: { name: "mmap-ipc", sw_version: "1.2.3" },
  });
  assertEquals(trigger.payload, {
    automation_type: "trigger",
    topic: topics.action,
    type: "button_short_press",
    subtype: "button_1",
    payload: "press",
    qos: 0,
    device,
    origin: { name: "mmap-ipc", sw_version: "1.2.3" },
  });
});

Deno.test("parseBrokerUrl() takes mqtt:// and mqtts:// with default ports and refuses the rest", () => {
  assertEquals(parseBrokerUrl("mqtt://broker.lan"), {
    url: "mqtt://broker.lan:1883",
    host: "broker.lan",
    port: 1883,
    tls: false,
  });
  assertEquals(parseBrokerUrl("mqtts://10.0.0.2"), {
    url: "mqtts://10.0.0.2:8883",
    host: "10.0.0.2",
    port: 8883,
    tls: true,
  });
  assertEquals(parseBrokerUrl("mqtt://[::1]:1884/").url, "mqtt://[::1]:1884");
  for (const host of ["broker_1.lan", "xn--bcher-kva.example", "mqtt.", "10.1.2.3", "[fe80::1]"]) {
    assertEquals(parseBrokerUrl(`mqtt://${host}`).host, host);
  }
  for (
    const [url, why] of [
      ["broker.lan", "expected mqtt://HOST"],
      ["ws://broker.lan", "mqtt:// or mqtts://"],
      ["mqtt://user:pw@broker.lan", "every user can read a command line"],
      ["mqtt://broker.lan/topic", "only a host and a port"],
      ["mqtt://broker.lan?x=1", "only a host and a port"],
      // Both passed, then crash-looped the bridge (--allow-net refused %41), or said nothing.
      ["mqtt://%41", "% escape"],
      ["mqtt://127.0.0.1:0", "port 0"],
      ["mqtt://broker.lan:99999", "port 99999 is no port: ports go from 1 to 65535"],
      // Passed, then crash-looped the bridge (Deno: "invalid char found in FQDN"), or, with a
      // comma, granted the bridge --allow-net to a second host on every port.
      ["mqtt://a=b:1883", 'its host "a=b" is no host name'],
      ["mqtt://a'b", "is no host name"],
      ["mqtt://a*b", "is no host name"],
      ["mqtt://a,127.0.0.1:18830", 'its host "a,127.0.0.1" is no host name'],
      ["mqtt://a..b", "is no host name"],
      ["mqtt://B\u00fccher.example", "xn-- form"],
    ]
  ) {
    assertThrowsWith(() => parseBrokerUrl(url), TypeError, "Invalid --mqtt", why);
  }
});

Deno.test("mqttSettings() checks the flags together, and the bridge gets only what it needs", () => {
  assertEquals(mqttSettings({}), undefined);
  assertThrowsWith(
    () => mqttSettings({ mqttPrefix: "a" }),
    TypeError,
    "--mqtt-prefix needs --mqtt",
  );
  // Every --mqtt-... flag, the one with a default in the usage text too.
  assertThrowsWith(
    () => mqttSettings({ mqttDiscoveryPrefix: "homeassistant" }),
    TypeError,
    "--mqtt-discovery-prefix needs --mqtt",
  );
  assertThrowsWith(
    () => mqttSettings({ mqtt: "mqtt://h", mqttCa: "ca.pem" }),
    TypeError,
    "--mqtt-ca is for TLS",
  );
  assertThrowsWith(
    () => mqttSettings({ mqtt: "mqtt://h", mqttClientId: "" }),
    TypeError,
    "--mqtt-client-id",
  );
  // What mosquitto refuses in a CONNECT as malformed UTF-8: the bridge would retry for good.
  for (
    const [clientId, why] of [
      ["a\tb", "U+0009, a control character"],
      ["a\u0085b", "U+0085, a control character"],
      ["a\u009bb", "U+009B, a control character"],
      ["a\ufdd0b", "U+FDD0, a noncharacter"],
      ["a\uffffb", "U+FFFF, a noncharacter"],
      ["a\ud800b", "U+D800, half of a surrogate pair on its own"],
      ["x".repeat(129), "longer than 128"],
    ]
  ) {
    assertThrowsWith(
      () =>
        mqttSettings({ mqtt: "mqtt://h", mqttClientId: clientId, mqttCredentials: "/dev/null" }),
      TypeError,
      "--mqtt-client-id",
      why,
    );
  }
  assertEquals(
    mqttSettings({
      mqtt: "mqtt://h",
      mqttClientId: "k\u00fcche-\u{1F4A1}",
      mqttCredentials: "/dev/null",
    })
      ?.clientId,
    "k\u00fcche-\u{1F4A1}",
  );
  const settings = mqttSettings({
    mqtt: "mqtts://broker.lan",
    mqttCa: "/etc/ca.pem",
    mqttCredentials: "/etc/mmap-ipc/login",
    mqttPrefix: "home/kitchen",
  });
  assert(settings !== undefined);
  assertEquals(settings.discoveryPrefix, "homeassistant");
  assertEquals(mqttBridgeArgs(settings), [
    "--mqtt",
    "mqtts://broker.lan:8883",
    "--mqtt-credentials",
    "/etc/mmap-ipc/login",
    "--mqtt-ca",
    "/etc/ca.pem",
    "--mqtt-prefix",
    "home/kitchen",
    "--mqtt-discovery-prefix",
    "homeassistant",
  ]);
  const permissions = mqttBridgePermissions(settings);
  assertEquals(permissions, ["--allow-ffi", "--allow-env", "--allow-net=broker.lan:8883"]);
});

Deno.test("parseCredentials() reads username= and password= lines and names bad lines, never values", () => {
  assertEquals(parseCredentials("# login\nusername=kitchen\r\npassword= a=b c \n", "f"), {
    username: "kitchen",
    password: " a=b c ",
    source: 'file "f"',
  });
  assertEquals(parseCredentials("username=u\n", "f").password, undefined);
  const secret = "hunter2";
  const bad = assertThrows(
    () => parseCredentials(`username=u\n${secret}\n`, "f"),
    Deno.errors.InvalidData,
  );
  assertStringIncludes(bad.message, "line 2");
  assert(!bad.message.includes(secret));
  assertThrowsWith(
    () => parseCredentials("password=x\n", "f"),
    Deno.errors.InvalidData,
    "no username",
  );
  assertThrowsWith(
    () => parseCredentials("username=a\nusername=b\n", "f"),
    Deno.errors.InvalidData,
    "line 2",
    "second time",
  );
  // Spacing around = is not part of a value: said, not sent to the broker as a wrong login.
  for (
    const [text, line, key] of [
      ["username = kitchen\n", "line 1", "username"],
      ["username=kitchen \n", "line 1", "username"],
      ["username=u\npassword = hunter2\n", "line 2", "password"],
    ]
  ) {
    const spaced = assertThrows(() => parseCredentials(text, "f"), Deno.errors.InvalidData);
    assertStringIncludes(spaced.message, `${line} has blanks around its ${key}`);
    assert(!spaced.message.includes("kitchen") && !spaced.message.includes("hunter2"));
  }
});

testWith(
  NEEDS.files,
  "readCredentialsFile() refuses a file others may read, a directory and a missing file",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/login`;
      await Deno.writeTextFile(path, "username=u\npassword=p\n");
      await Deno.chmod(path, 0o640);
      assertThrowsWith(
        () => readCredentialsFile(path),
        Deno.errors.PermissionDenied,
        path,
        "mode 640",
        `chmod 600 ${path}`,
      );
      await Deno.chmod(path, 0o600);
      assertEquals(readCredentialsFile(path).username, "u");
      // The command to run is one a shell takes as it is, whatever the path holds.
      const spaced = `${dir}/my login's`;
      await Deno.writeTextFile(spaced, "username=u\n", { mode: 0o644 });
      await Deno.chmod(spaced, 0o644);
      assertThrowsWith(
        () => readCredentialsFile(spaced),
        Deno.errors.PermissionDenied,
        `run chmod 600 '${dir}/my login'\\''s'`,
      );
      assertThrowsWith(
        () => readCredentialsFile(`${dir}/none`),
        Deno.errors.NotFound,
        `${dir}/none`,
        "no such file",
      );
      assertThrowsWith(() => readCredentialsFile(dir), Deno.errors.InvalidData, "a directory");
    });
  },
);

/** A real (self-signed, EC) CA certificate, valid until 2126: only parsed, never trusted. */
const TEST_CA = [
  "-----BEGIN CERTIFICATE-----",
  "MIIBjDCCATOgAwIBAgIUSiarIlvdLq2dDv0Aj7erg70ho5wwCgYIKoZIzj0EAwIw",
  "GzEZMBcGA1UEAwwQbW1hcC1pcGMtdGVzdC1jYTAgFw0yNjEyMDUxNDAwMjFaGA8y",
  "MTI2MTExMTE0MDAyMVowGzEZMBcGA1UEAwwQbW1hcC1pcGMtdGVzdC1jYTBZMBMG",
  "ByqGSM49AgEGCCqGSM49AwEHA0IABJE+mS2nQxmtWVt8+JU4PYFORrUn9IBqvppV",
  "ety9D3BLmGprvkidAm73yPNgAIWAalyFfE8r5g5mTPk+7ICH27ajUzBRMB0GA1Ud",
  "DgQWBBQXhNuY9XjR0xBekSgoGNIajq9LWTAfBgNVHSMEGDAWgBQXhNuY9XjR0xBe",
  "kSgoGNIajq9LWTAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIBMV",
  "RbHYhVuEZ56ElsY29E8IKpVgvIhJGjnRopXS7gtwAiB5AkgVyFKt4W2VYI8D0oU7",
  "Mm0hYyWmX3Wgxc4oB1HwCw==",
  "-----END CERTIFICATE-----",
].join("\n") + "\n";

testWith(
  NEEDS.files,
  "readCaFile() takes a PEM file and refuses one without a certificate, one whose certificate is junk, a directory and a missing file",
  async () => {
    await withTempDir(async (dir) => {
      const pem = `${dir}/ca.pem`;
      await Deno.writeTextFile(pem, TEST_CA);
      assertEquals(readCaFile(pem), TEST_CA);
      // A bundle of two, as a CA's chain comes.
      await Deno.writeTextFile(pem, `# chain\n${TEST_CA}\n${TEST_CA}`);
      assertEquals(readCaFile(pem), `# chain\n${TEST_CA}\n${TEST_CA}`);
      // A BEGIN line around junk used to pass here, and fail every TLS connection later.
      for (
        const [junk, why] of [
          ["-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "its certificate is"],
          ["-----BEGIN CERTIFICATE-----\nhello\n-----END CERTIFICATE-----\n", "its certificate is"],
          [
            `${TEST_CA}-----BEGIN CERTIFICATE-----\nhello\n-----END CERTIFICATE-----\n`,
            "certificate 2 is",
          ],
          [`${TEST_CA}-----BEGIN CERTIFICATE-----\nMIIB\n`, 'no "-----END CERTIFICATE-----" line'],
        ]
      ) {
        await Deno.writeTextFile(pem, junk);
        const error = assertThrowsWith(() => readCaFile(pem), Deno.errors.InvalidData, why);
        assertStringIncludes(error.message, JSON.stringify(pem));
      }
      await Deno.writeTextFile(`${dir}/key.pem`, "-----BEGIN PRIVATE KEY-----\n");
      assertThrowsWith(
        () => readCaFile(`${dir}/key.pem`),
        Deno.errors.InvalidData,
        "no PEM certificate",
      );
      assertThrowsWith(() => readCaFile(dir), Deno.errors.InvalidData, "a directory");
      assertThrowsWith(() => readCaFile(`${dir}/none`), Deno.errors.NotFound, `${dir}/none`);
    });
  },
);

testWith(["env"], "credentialsFromEnv() needs the user name when a password is set", () => {
  const saved = [Deno.env.get(USERNAME_ENV), Deno.env.get(PASSWORD_ENV)];
  try {
    Deno.env.delete(USERNAME_ENV);
    Deno.env.delete(PASSWORD_ENV);
    assertEquals(credentialsFromEnv(), undefined);
    Deno.env.set(PASSWORD_ENV, "p");
    assertThrowsWith(() => credentialsFromEnv(), TypeError, USERNAME_ENV);
    Deno.env.set(USERNAME_ENV, "u");
    assertEquals(credentialsFromEnv(), {
      username: "u",
      password: "p",
      source: `$${USERNAME_ENV}`,
    });
  } finally {
    for (const [name, value] of [[USERNAME_ENV, saved[0]], [PASSWORD_ENV, saved[1]]] as const) {
      if (value === undefined) Deno.env.delete(name);
      else Deno.env.set(name, value);
    }
  }
});

Deno.test("describeProblem() says what to do about refused logins, TLS and unreachable brokers", () => {
  const error = (message: string, code: string | number): Error & { code: string | number } =>
    Object.assign(new Error(message), { code });
  const url = "mqtt://broker.lan:1883";
  const login = { username: "kitchen", password: "hunter2", source: 'file "/etc/login"' };
  const bad = describeProblem(error("Connection refused: Bad username or password", 4), {
    url,
    credentials: login,
  });
  assertEquals(bad.kind, "credentials");
  assertStringIncludes(
    bad.message,
    'bad user name or password (user "kitchen" from file "/etc/login")',
  );
  assert(!bad.message.includes("hunter2"));
  const none = describeProblem(error("Connection refused: Not authorized", 5), { url });
  assertStringIncludes(none.message, "--mqtt-credentials FILE");
  const tls = describeProblem(
    error("self-signed certificate in certificate chain", "SELF_SIGNED_CERT_IN_CHAIN"),
    { url },
  );
  assertEquals(tls.kind, "tls");
  assertStringIncludes(tls.message, "--mqtt-ca FILE");
  const down = describeProblem(
    error("connect ECONNREFUSED 10.0.0.2:1883", "ECONNREFUSED"),
    { url },
  );
  assertStringIncludes(down.message, "nothing accepts connections there");
  assertEquals(
    describeProblem(error("getaddrinfo ENOTFOUND", "ENOTFOUND"), { url })
      .kind,
    "dns",
  );
  // A certificate for another name: another CA would not help, so none is suggested.
  const name = describeProblem(
    error("Hostname/IP does not match certificate's altnames", "ERR_TLS_CERT_ALTNAME_INVALID"),
    { url: "mqtts://10.0.0.2:8883" },
  );
  assertStringIncludes(name.message, "is for another host name");
  assert(!name.message.includes("--mqtt-ca"), name.message);
  // mqtt:// to a port that takes TLS: the broker hangs up on the plain CONNECT.
  const reset = describeProblem(error("read ECONNRESET", "ECONNRESET"), { url });
  assertStringIncludes(reset.message, "use an mqtts:// URL");
  // ... which is also how a broker at its max_connections turns a client away.
  assertStringIncludes(reset.message, "if it takes plain MQTT, the broker turned this client away");
  // mqtts:// to a port of plain MQTT: the broker hangs up on the TLS handshake.
  const plain = describeProblem(
    error(
      "Client network socket disconnected before secure TLS connection was established",
      "ECONNRESET",
    ),
    { url: "mqtts://10.0.0.2:1883" },
  );
  assertStringIncludes(plain.message, "before the TLS handshake was done (ECONNRESET)");
  assertStringIncludes(plain.message, "use an mqtt:// URL");
  assertStringIncludes(plain.message, "if it takes TLS, the broker turned this client away");
  assert(!plain.message.includes("mqtts:// URL"), plain.message);
  // A reset after the broker accepted the connection is no TLS port's: no such hint.
  const later = describeProblem(error("read ECONNRESET", "ECONNRESET"), {
    url,
    credentials: undefined,
    accepted: true,
  });
  assert(!later.message.includes("mqtts://"), later.message);
  assertStringIncludes(later.message, "ECONNRESET");
});

Deno.test("describeProblem() calls a reason code a refusal only before the broker accepted the connection", () => {
  const url = "mqtt://broker.lan:1883";
  // What mqtt.js reports of a packet longer than the bridge's Maximum Packet Size.
  const error = Object.assign(
    new Error("exceeding packets size publish: 5000 bytes, maximumPacketSize is 4096"),
    { code: 149 },
  );
  const after = describeProblem(error, { url, accepted: true });
  assert(!after.message.includes("refused"), `${url}: ${after.message}`);
  assertStringIncludes(after.message, `The connection to the broker at ${url} failed`);
  assertStringIncludes(after.message, "reason code 0x95");
  const before = describeProblem(Object.assign(new Error("Server unavailable"), { code: 136 }), {
    url,
  });
  assertStringIncludes(before.message, `The broker at ${url} refused the connection`);
});

/** A PUBLISH from the broker: `topic`, QoS, packet id, `payload` bytes of "A" (3.1.1 layout). */
function publishBytes(topic: string, qos: 0 | 1 | 2, id: number, payload: number): number[] {
  const name = [...new TextEncoder().encode(topic)];
  const body = [name.length >> 8, name.length & 0xff, ...name];
  if (qos > 0) body.push(id >> 8, id & 0xff);
  const all = body.concat(new Array(payload).fill(0x41));
  const length: number[] = [];
  for (let left = all.length;;) {
    const byte = left & 0x7f;
    left = Math.floor(left / 128);
    length.push(left > 0 ? byte | 0x80 : byte);
    if (left === 0) break;
  }
  return [0x30 | (qos << 1), ...length].concat(all);
}

Deno.test("PacketFilter leaves out a PUBLISH over the limit, naming its topic and packet id, and hands on everything else byte for byte, however the bytes come", () => {
  const connack = [0x20, 0x03, 0x00, 0x00, 0x00];
  const before = publishBytes("p/led/set", 1, 7, 2);
  const fits = publishBytes("p/x", 0, 0, 4096 - 2 - 3 - 3); // 4096 bytes in all
  const over = publishBytes("homeassistant/status", 1, 0x1234, 5000);
  const overQos0 = publishBytes("p/led/state", 0, 0, 300_000); // a 3-byte length
  const after = [0xd0, 0x00]; // PINGRESP
  const kept = [...connack, ...before, ...fits, ...after];
  const bytes = new Uint8Array(connack.concat(before, fits, over, overQos0, after));
  assertEquals(fits.length, 4096);
  for (const size of [1, 2, 3, 7, 4096, 4097, bytes.length]) {
    const filter = new PacketFilter(4096);
    const passed: number[] = [];
    const skipped: SkippedPublish[] = [];
    for (let at = 0; at < bytes.length; at += size) {
      const result = filter.feed(bytes.subarray(at, at + size));
      assertEquals(result.oversized, undefined, `chunks of ${size}`);
      for (const part of result.pass) for (const byte of part) passed.push(byte);
      skipped.push(...result.skipped);
    }
    assertEquals(passed, kept, `chunks of ${size}: what is handed on`);
    assertEquals(skipped, [
      { size: over.length, topic: "homeassistant/status", qos: 1, packetId: 0x1234 },
      { size: overQos0.length, topic: "p/led/state", qos: 0, packetId: 0 },
    ], `chunks of ${size}`);
  }
});

Deno.test("PacketFilter reports a packet over the limit it cannot leave out (another type, or QoS 2), with what came before it handed on", () => {
  const connack = [0x20, 0x03, 0x00, 0x00, 0x00];
  const cases: [number[], Oversized][] = [
    [[0x90, 0xfe, 0x1f], { type: 9, size: 4097 }], // a SUBACK of 4097 bytes: its header alone
    [publishBytes("t", 2, 1, 5000), { type: 3, size: 5000 + 2 + 1 + 2 + 3 }],
  ];
  for (const [packet, oversized] of cases) {
    const bytes = new Uint8Array(connack.concat(packet));
    for (const size of [1, 3, bytes.length]) {
      const filter = new PacketFilter(4096);
      const passed: number[] = [];
      let found: Oversized | undefined;
      for (let at = 0; at < bytes.length && found === undefined; at += size) {
        const result = filter.feed(bytes.subarray(at, at + size));
        for (const part of result.pass) for (const byte of part) passed.push(byte);
        found = result.oversized;
      }
      assertEquals(found, oversized, `chunks of ${size}`);
      assertEquals(passed, connack, `chunks of ${size}`);
    }
  }
});

Deno.test("PacketFilter hands a malformed length on for the parser to fail, held header and all", () => {
  const bytes = new Uint8Array([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]);
  for (const size of [1, 2, bytes.length]) {
    const filter = new PacketFilter(4096);
    const passed: number[] = [];
    for (let at = 0; at < bytes.length; at += size) {
      const result = filter.feed(bytes.subarray(at, at + size));
      assertEquals(result.oversized, undefined);
      for (const part of result.pass) passed.push(...part);
    }
    assertEquals(passed, [...bytes], `chunks of ${size}`);
  }
});

Deno.test("publishSize() is the length mqtt.js writes: MQTT 5's property length, QoS 1's packet id, UTF-8", () => {
  // Fixed header 2, topic 2 + 3, packet id 2, property length 1, payload 2.
  assertEquals(publishSize("a/b", "\u00e9", 1, true), 12);
  assertEquals(publishSize("a/b", "\u00e9", 0, false), 9);
  // 199 bytes of remaining length take two bytes to say.
  assertEquals(publishSize("t", "x".repeat(196), 0, false), 202);
});

Deno.test("refusedPublish() names the topic and the reason code, and the ACL and user for 0x87", () => {
  // What mqtt.js passes a publish's callback for a PUBACK with a reason code of failure.
  const error = (message: string, code: number): Error & { code: number } =>
    Object.assign(new Error(`Publish error: ${message}`), { code });
  const url = "mqtt://broker.lan:1883";
  const login = { username: "kitchen", password: "hunter2", source: 'file "/etc/login"' };
  const denied = refusedPublish(error("Not authorized", 0x87), {
    url,
    topic: "a/led/state",
    credentials: login,
  });
  assertStringIncludes(
    denied,
    'refused a message on "a/led/state" (reason code 0x87: Not authorized)',
  );
  assertStringIncludes(denied, 'its ACL does not let user "kitchen" publish there');
  assert(!denied.includes("hunter2"));
  assertStringIncludes(
    refusedPublish(error("Not authorized", 0x87), {
      url,
      topic: "a/led/state",
      credentials: undefined,
    }),
    "does not let anonymous clients publish",
  );
  const quota = refusedPublish(error("Quota exceeded", 0x97), {
    url,
    topic: "a/led/state",
    credentials: login,
  });
  assertStringIncludes(quota, "(reason code 0x97: Quota exceeded)");
  assert(!quota.includes("ACL"), quota);
});

Deno.test("BacklogReport says a run of backlogs once, and how much was folded once it is over", async () => {
  const lines: string[] = [];
  const log = {
    debug: () => {},
    info: (line: string) => lines.push(`info ${line}`),
    warn: (line: string) => lines.push(`warn ${line}`),
    error: (line: string) => lines.push(`error ${line}`),
  };
  {
    using report = new BacklogReport(log);
    // A flood: behind and caught up again, 100 times in a row.
    for (let i = 0; i < 100; i++) {
      report.waiting("full");
      report.caughtUp(2);
    }
    assertEquals(lines, [
      "warn The button process is behind with commands: folding the next ones together",
    ]);
    await delay(1_300);
    assertEquals(lines.length, 2, lines.join("\n"));
    assertEquals(lines[1], "info Commands flow again (200 folded into others)");
    // Another reason is another warning; what is pending at the end is said at once.
    report.waiting("no receiver");
    report.caughtUp(0);
  }
  assertEquals(lines.slice(2), [
    "warn No button process takes commands right now: holding the latest until one does",
    "info Commands flow again (0 folded into others)",
  ]);
});

Deno.test("watchCommand() gives mosquitto_sub the broker's TLS and the login's user, never a password", () => {
  const plain = { host: "broker.lan", port: 1883, tls: false };
  assertEquals(
    watchCommand(plain, "mmap-ipc/pi"),
    "mosquitto_sub -h broker.lan -p 1883 -v -t 'mmap-ipc/pi/#'",
  );
  assertEquals(
    watchCommand({ ...plain, host: "[::1]", port: 8883, tls: true }, "p", { username: "kitchen" }),
    "mosquitto_sub -h ::1 -p 8883 --capath /etc/ssl/certs -u kitchen -P PASSWORD -v -t 'p/#'",
  );
  assertEquals(
    watchCommand({ ...plain, tls: true, caFile: "/etc/my ca.pem" }, "p"),
    "mosquitto_sub -h broker.lan -p 1883 --cafile '/etc/my ca.pem' -v -t 'p/#'",
  );
});
