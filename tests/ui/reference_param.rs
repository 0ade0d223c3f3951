struct Greeter;

#[rodario::actor]
impl Greeter {
    pub fn greet(&self, name: &str) -> String {
        name.to_owned()
    }
}

fn main() {}
