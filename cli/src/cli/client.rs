//! The client commands: `generate`, `get`, `status`, and the client every
//! command builds from its arguments.

use std::fs::File;
use std::io::{Read, Write};
use std::time::Duration;

use keyserver::transports::{ClientOptions, ClientTls, Failover, JsonRpc, Token, XmlRpc};
use keyserver::{Change, Encryption, KeyClient, Strength, Target, Transport, UnwrapMode};

use super::args::{ChangeArgs, ClientArgs, Command, Protocol, TargetArgs};
use super::choice;
use super::custody::{self, read_kek};
use super::exit::{io_failure, usage, Failure};
use super::output::{create_private_file, print_stdout};

/// The client `args` describe.
pub(crate) fn client(args: &ClientArgs) -> Result<KeyClient<Box<dyn Transport>>, Failure> {
    let options = ClientOptions {
        timeout: Duration::from_secs(args.timeout.max(1)),
        tls: ClientTls {
            ca_cert: args.ca_cert.clone(),
            client_cert: args.client_cert.clone(),
            client_key: args.client_key.clone(),
        },
        insecure: args.insecure,
        token: token(args)?,
    };
    let one = |url: &str| -> Result<Box<dyn Transport>, Failure> {
        check_url(url)?;
        Ok(match args.transport {
            Protocol::Xmlrpc => Box::new(XmlRpc::with_options(url, options.clone())?),
            Protocol::Jsonrpc => Box::new(JsonRpc::with_options(url, options.clone())?),
        })
    };
    // Several servers over one storage: each call goes to one, and moves to
    // the next as `Failover` allows.
    let urls: Vec<&str> = args
        .server
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let transport: Box<dyn Transport> = match urls.as_slice() {
        [] => return Err(usage("--server: no URL given")),
        [url] => one(url)?,
        many => Box::new(Failover::new(
            many.iter().map(|u| one(u)).collect::<Result<Vec<_>, _>>()?,
        )?),
    };
    let mode = if args.client_unwrap {
        UnwrapMode::Client
    } else {
        UnwrapMode::Server
    };
    Ok(KeyClient::new(transport, choice::suite(args.local_suite)?).with_unwrap_mode(mode))
}

/// A malformed server URL is a usage error (exit 2), not an unreachable
/// server.
fn check_url(url: &str) -> Result<(), Failure> {
    let bad = |why: &str| {
        usage(format!(
            "--server {url:?}: {why} (give http://HOST:PORT or https://HOST:PORT)"
        ))
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("not an http or https URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(())
}

/// The token of `--token`, `KEYSERVER_TOKEN` or `--token-file`.
fn token(args: &ClientArgs) -> Result<Option<Token>, Failure> {
    if let Some(token) = &args.token {
        return Ok(Some(Token::new(token.as_str())));
    }
    let Some(path) = &args.token_file else {
        return Ok(None);
    };
    let mut text = zeroize::Zeroizing::new(String::new());
    File::open(path)
        .and_then(|f| f.take(4096).read_to_string(&mut text))
        .map_err(|e| io_failure(format!("cannot read the token file {}", path.display()), e))?;
    Ok(Some(Token::new(text.as_str())))
}

/// `generate`, `get` and `status`.
pub(crate) async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Generate {
            client: args,
            out,
            shares,
            out_dir,
            strength,
            alg,
        } => {
            let strength = strength_arg(strength)?;
            let alg = alg
                .map(|a| a.parse::<keyserver::KekAlg>())
                .transpose()
                .map_err(|e| usage(format!("--alg: {e}")))?;
            let split = shares.as_deref().map(custody::parse_split).transpose()?;
            let client = client(&args)?;
            // Create the files before asking for a key: a KEK that cannot be
            // saved would leave the server with a key nobody can use.
            let share_files = match (split, &out_dir) {
                (Some((_, n)), Some(dir)) => Some(custody::ShareFiles::create(dir, n)?),
                _ => None,
            };
            let file = out.as_deref().map(create_private_file).transpose()?;
            let generated = match (strength, alg) {
                (Some(strength), None) => client.generate_with_strength(strength).await,
                (None, None) => client.generate().await,
                (strength, alg) => client.generate_with(strength, alg).await,
            };
            let kek = match generated {
                Ok(kek) => kek,
                Err(e) => {
                    if let Some((path, _)) = &file {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(e.into());
                }
            };
            if let (Some(files), Some((k, n))) = (share_files, split) {
                let split = keyserver::shares::split_kek(&kek, k, n).map_err(Failure::from)?;
                let paths = files.write(&split)?;
                let _ = writeln!(std::io::stderr(), "key id: {}", kek.id());
                return custody::report_shares("the KEK", k, &paths);
            }
            let pem = kek.to_pem();
            match file {
                Some((path, mut file)) => file
                    .write_all(pem.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| io_failure(format!("cannot write {}", path.display()), e))?,
                None => print_stdout(&pem)?,
            }
            let _ = writeln!(std::io::stderr(), "key id: {}", kek.id());
            Ok(())
        }
        Command::Get { client: args, kek } => {
            let kek = custody::read_kek_arg(&kek)?;
            let dek = client(&args)?.get(&kek).await?;
            let mut line = zeroize::Zeroizing::new(hex::encode(dek.as_bytes()));
            line.push('\n');
            print_stdout(&line)
        }
        Command::Status { client: args } => {
            let status = client(&args)?.status().await?;
            print_stdout(&format!(
                "keys: {}\nversion: {}\nsuite: {}\nstorage: {}\nstrength: {}\nkek_alg: {}\nfips: {}\n",
                status.keys,
                status.version,
                status.suite,
                status.storage,
                status.strength,
                status.kek_alg,
                if status.fips { "yes" } else { "no" }
            ))
        }
        Command::Describe {
            client: args,
            target,
        } => {
            let target = target_of(&target)?;
            let info = client(&args)?.describe(&target.key_id()).await?;
            print_stdout(&(info_json(&info) + "\n"))
        }
        Command::Rotate {
            client: args,
            kek,
            out,
            shares,
            out_dir,
            strength,
        } => {
            let strength = strength_arg(strength)?;
            let split = shares.as_deref().map(custody::parse_split).transpose()?;
            let kek = custody::read_kek_arg(&kek)?;
            let client = client(&args)?;
            // Every file is made before the server is asked.
            let share_files = match (split, &out_dir) {
                (Some((_, n)), Some(dir)) => Some(custody::ShareFiles::create(dir, n)?),
                _ => None,
            };
            let file = out.as_deref().map(create_private_file).transpose()?;
            let new = match client.rotate(&kek, strength).await {
                Ok(new) => new,
                Err(e) => {
                    if let Some((path, _)) = &file {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(e.into());
                }
            };
            let _ = writeln!(
                std::io::stderr(),
                "key id: {} (rotated from {})",
                new.id(),
                kek.id()
            );
            if let (Some(files), Some((k, n))) = (share_files, split) {
                let split = keyserver::shares::split_kek(&new, k, n).map_err(Failure::from)?;
                let paths = files.write(&split)?;
                return custody::report_shares("the new KEK", k, &paths);
            }
            if let Some((path, mut file)) = file {
                file.write_all(new.to_pem().as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| io_failure(format!("cannot write {}", path.display()), e))?;
            }
            Ok(())
        }
        Command::Suspend(a) => change(Change::Suspend, a).await,
        Command::Resume(a) => change(Change::Resume, a).await,
        Command::Compromised(a) => change(Change::Compromised, a).await,
        Command::Destroy(a) => change(Change::Destroy, a).await,
        Command::CancelDestroy(a) => change(Change::CancelDestroy, a).await,
        Command::ListKeys {
            client: args,
            state,
            owner,
            past_cryptoperiod,
            limit,
        } => {
            let state = state
                .map(|s| {
                    s.parse::<keyserver::KeyState>()
                        .map_err(|e| usage(e.to_string()))
                })
                .transpose()?;
            let client = client(&args)?;
            let mut filter = keyserver::KeyFilter {
                state,
                owner,
                past_cryptoperiod,
                cursor: None,
                limit,
            };
            loop {
                let page = client.list_keys(&filter).await?;
                let mut text = String::new();
                for info in &page.keys {
                    text.push_str(&info_json(info));
                    text.push('\n');
                }
                print_stdout(&text)?;
                match page.cursor {
                    Some(cursor) => filter.cursor = Some(cursor),
                    None => return Ok(()),
                }
            }
        }
        _ => Err(usage("not a client command")),
    }
}

/// The strength of `--strength BITS`.
fn strength_arg(bits: Option<u32>) -> Result<Option<Strength>, Failure> {
    bits.map(|bits| Strength::from_bits(bits).map_err(|e| usage(e.to_string())))
        .transpose()
}

/// The target of `--kek FILE` or `--key-id ID`.
fn target_of(args: &TargetArgs) -> Result<Target, Failure> {
    match (&args.kek, &args.key_id) {
        (Some(path), _) => Ok(Target::Kek(read_kek(path)?)),
        (None, None) if !args.kek_shares.is_empty() => {
            Ok(Target::Kek(custody::kek_from_shares(&args.kek_shares)?))
        }
        (None, Some(id)) => id
            .parse()
            .map(Target::KeyId)
            .map_err(|e: keyserver::Error| usage(format!("--key-id: {e}"))),
        (None, None) => Err(usage(
            "give --kek FILE, --kek-shares FILE... or --key-id ID",
        )),
    }
}

async fn change(change: Change, args: ChangeArgs) -> Result<(), Failure> {
    let target = target_of(&args.target)?;
    let info = client(&args.client)?.change(change, &target).await?;
    print_stdout(&(info_json(&info) + "\n"))
}

/// A key's lifecycle as one JSON object (times as RFC 3339).
fn info_json(info: &keyserver::KeyInfo) -> String {
    use keyserver::api::rfc3339;
    let mut map = serde_json::Map::new();
    map.insert("key_id".into(), info.key_id.to_string().into());
    map.insert("state".into(), info.state.name().into());
    map.insert("strength".into(), info.strength.bits().into());
    map.insert("created".into(), rfc3339(info.created).into());
    if let Some(owner) = &info.owner {
        map.insert("owner".into(), owner.clone().into());
    }
    for (name, time) in [
        ("deactivate_at", info.deactivate_at),
        ("destroy_at", info.destroy_at),
    ] {
        if let Some(t) = time {
            map.insert(name.into(), rfc3339(t).into());
        }
    }
    for (name, id) in [
        ("rotated_to", info.rotated_to),
        ("rotated_from", info.rotated_from),
    ] {
        if let Some(id) = id {
            map.insert(name.into(), id.to_string().into());
        }
    }
    if let Some(alg) = info.kek_alg {
        map.insert("kek_alg".into(), alg.name().into());
    }
    serde_json::Value::Object(map).to_string()
}
